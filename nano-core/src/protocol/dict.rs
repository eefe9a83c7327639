//! [`Dictionary`]: route compression (route ↔ u16 code), sent in the handshake as nano's `dict`
//! and as pomelo 2.x's `useDict` / `dictVersion` / `routeToCode` / `codeToRoute`.

use std::collections::HashMap;

use super::{DictError, RouteName};

/// Route-compression dictionary: route ↔ u16 code.
///
/// The server announces it in the handshake (`"dict": {"Room.Join": 1, …}`, see
/// [`to_json`](Self::to_json)); afterwards either side may send a 2-byte code instead of a
/// route string. Lookups by code (decoding) index a code-sorted table — O(1) for the dense
/// codes [`from_routes`](Self::from_routes) assigns; lookups by route (encoding) are one
/// hash lookup. Cloning copies the tables: share one dictionary behind an `Arc`.
///
/// # Examples
///
/// ```
/// use nano_core::protocol::Dictionary;
///
/// let dict = Dictionary::from_routes(["onMessage", "Room.Join", "Room.Message"]);
/// assert_eq!(dict.code("Room.Join"), Some(1)); // codes follow the sorted route names
/// assert_eq!(dict.route(3).map(|r| r.as_str()), Some("onMessage"));
/// assert_eq!(
///     dict.to_json(),
///     serde_json::json!({"Room.Join": 1, "Room.Message": 2, "onMessage": 3})
/// );
/// ```
///
/// # Two forms in the handshake
///
/// nano's clients read `dict`; pomelo 2.x clients (libpomelo2, pypomelo) read `routeToCode`,
/// `codeToRoute` and `dictVersion` ([`pomelo_sys`](Self::pomelo_sys)). A dictionary built by
/// [`from_routes`](Self::from_routes) with at most 32767 routes gives the pomelo form its own
/// codes, [`POMELO_CODE_BIT`](Dictionary::POMELO_CODE_BIT) set on nano's code, so the server can tell which form a client
/// sends with. Both codes decode to the same route. That matters for pushes: some pomelo-form
/// clients send compressed routes but cannot decode compressed pushes (pypomelo 1.0.1 looks
/// `codeToRoute` up with an integer key while JSON object keys are strings), so servers compress
/// pushes only toward clients that used nano's `dict` codes.
#[derive(Debug, Clone, Default)]
pub struct Dictionary {
    /// Route → code, for encoding.
    by_route: HashMap<RouteName, u16>,
    /// (code, route) sorted by code, for decoding.
    by_code: Vec<(u16, RouteName)>,
    /// Whether codes with [`POMELO_CODE_BIT`](Dictionary::POMELO_CODE_BIT) set decode as the pomelo form of the code
    /// without it (every code is below the bit).
    pomelo_alias: bool,
}

impl Dictionary {
    /// The bit that marks the pomelo 2.x form of a code (see [`Dictionary`]).
    pub const POMELO_CODE_BIT: u16 = 0x8000;

    /// An empty dictionary (no compression).
    #[inline]
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `route` with `code`. Code 0 is accepted (nano never assigns it).
    ///
    /// # Errors
    ///
    /// [`DictError::DuplicateRoute`] or [`DictError::DuplicateCode`] if either is already
    /// present; the dictionary is unchanged then.
    pub fn insert(&mut self, route: &str, code: u16) -> Result<(), DictError> {
        if self.by_route.contains_key(route) {
            return Err(DictError::DuplicateRoute(route.to_owned()));
        }
        let at = match self.by_code.binary_search_by_key(&code, |(c, _)| *c) {
            Ok(_) => return Err(DictError::DuplicateCode(code)),
            Err(at) => at,
        };
        let name = RouteName::from(route);
        self.by_route.insert(name.clone(), code);
        self.by_code.insert(at, (code, name));
        Ok(())
    }

    /// Builds a dictionary from route names: they are sorted and deduplicated, then given
    /// codes 1, 2, 3, … in that order, so the same set of routes always gets the same codes
    /// whatever order it is listed in. Routes past the 65535th get no code (they are
    /// simply sent uncompressed).
    pub fn from_routes<I>(routes: I) -> Self
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
    {
        let mut names: Vec<I::Item> = routes.into_iter().collect();
        names.sort_unstable_by(|a, b| a.as_ref().cmp(b.as_ref()));
        names.dedup_by(|a, b| a.as_ref() == b.as_ref());
        names.truncate(usize::from(u16::MAX));
        let mut dict = Dictionary {
            by_route: HashMap::with_capacity(names.len()),
            by_code: Vec::with_capacity(names.len()),
            pomelo_alias: names.len() < usize::from(Self::POMELO_CODE_BIT),
        };
        for (code, route) in (1..=u16::MAX).zip(&names) {
            let name = RouteName::from(route.as_ref());
            dict.by_route.insert(name.clone(), code);
            dict.by_code.push((code, name));
        }
        dict
    }

    /// Parses the handshake's `dict` object (`{"Room.Join": 1, …}`), as a client does.
    ///
    /// # Errors
    ///
    /// [`DictError::NotAnObject`], [`DictError::InvalidCode`] for a value that is not an
    /// integer in 0..=65535, or a duplicate code.
    ///
    /// # Examples
    ///
    /// ```
    /// use nano_core::protocol::Dictionary;
    ///
    /// let dict = Dictionary::from_json(&serde_json::json!({"Room.Join": 1}))?;
    /// assert_eq!(dict.code("Room.Join"), Some(1));
    /// # Ok::<(), nano_core::protocol::DictError>(())
    /// ```
    pub fn from_json(value: &serde_json::Value) -> Result<Self, DictError> {
        let object = value.as_object().ok_or(DictError::NotAnObject)?;
        let mut dict = Dictionary::new();
        for (route, code) in object {
            let code = code
                .as_u64()
                .and_then(|c| u16::try_from(c).ok())
                .ok_or_else(|| DictError::InvalidCode(route.clone()))?;
            dict.insert(route, code)?;
        }
        Ok(dict)
    }

    /// The code of `route`, if it has one.
    #[inline]
    #[must_use]
    pub fn code(&self, route: &str) -> Option<u16> {
        if self.by_code.is_empty() {
            return None;
        }
        self.by_route.get(route).copied()
    }

    /// The route of `code`, if known.
    #[inline]
    #[must_use]
    pub fn route(&self, code: u16) -> Option<&RouteName> {
        // Fast path: codes 1..=n assigned densely (what `from_routes` does).
        if let Some((c, route)) = usize::from(code)
            .checked_sub(1)
            .and_then(|i| self.by_code.get(i))
        {
            if *c == code {
                return Some(route);
            }
        }
        if let Ok(i) = self.by_code.binary_search_by_key(&code, |(c, _)| *c) {
            return Some(&self.by_code[i].1);
        }
        if self.is_pomelo_code(code) {
            return self.route(code & !Self::POMELO_CODE_BIT);
        }
        None
    }

    /// Whether `code` is the pomelo 2.x form of a code (see [`Dictionary`]): always false for
    /// a dictionary that gives the pomelo form no codes of its own.
    #[inline]
    #[must_use]
    pub fn is_pomelo_code(&self, code: u16) -> bool {
        self.pomelo_alias && code & Self::POMELO_CODE_BIT != 0
    }

    /// The code the pomelo 2.x form uses for nano's `code`.
    #[inline]
    #[must_use]
    pub fn pomelo_code(&self, code: u16) -> u16 {
        if self.pomelo_alias {
            code | Self::POMELO_CODE_BIT
        } else {
            code
        }
    }

    /// A stable version of the dictionary (16 hex digits), pomelo's `dictVersion`: the same for
    /// the same routes and codes, in any process, and different when they change.
    #[must_use]
    pub fn version(&self) -> String {
        // FNV-1a, 64 bits, over "route\0code\0" in code order.
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        let mut eat = |bytes: &[u8]| {
            for &b in bytes {
                hash ^= u64::from(b);
                hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
            }
        };
        for (route, code) in self.iter() {
            eat(route.as_bytes());
            eat(&[0]);
            eat(&self.pomelo_code(code).to_be_bytes());
            eat(&[0]);
        }
        format!("{hash:016x}")
    }

    /// The pomelo 2.x form of the dictionary, as handshake `sys` fields: `useDict: true`,
    /// `dictVersion` ([`version`](Self::version)), `routeToCode` (`{"Room.Join": 32769}`) and
    /// `codeToRoute` (`{"32769": "Room.Join"}`), with the pomelo codes (see [`Dictionary`]).
    ///
    /// # Examples
    ///
    /// ```
    /// use nano_core::protocol::Dictionary;
    ///
    /// let dict = Dictionary::from_routes(["Room.Join"]);
    /// let sys = dict.pomelo_sys();
    /// assert_eq!(sys["useDict"], true);
    /// assert_eq!(sys["routeToCode"], serde_json::json!({"Room.Join": 0x8001}));
    /// assert_eq!(sys["codeToRoute"], serde_json::json!({"32769": "Room.Join"}));
    /// assert_eq!(dict.route(0x8001).unwrap(), "Room.Join"); // both codes decode
    /// ```
    #[must_use]
    pub fn pomelo_sys(&self) -> serde_json::Map<String, serde_json::Value> {
        let mut route_to_code = serde_json::Map::new();
        let mut code_to_route = serde_json::Map::new();
        for (route, code) in self.iter() {
            let code = self.pomelo_code(code);
            route_to_code.insert(route.to_owned(), code.into());
            code_to_route.insert(code.to_string(), route.into());
        }
        let mut sys = serde_json::Map::new();
        sys.insert("useDict".into(), true.into());
        sys.insert("dictVersion".into(), self.version().into());
        sys.insert("routeToCode".into(), route_to_code.into());
        sys.insert("codeToRoute".into(), code_to_route.into());
        sys
    }

    /// `true` when the dictionary has no routes (no compression).
    #[inline]
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.by_code.is_empty()
    }

    /// Number of routes.
    #[inline]
    #[must_use]
    pub fn len(&self) -> usize {
        self.by_code.len()
    }

    /// The (route, code) pairs in ascending code order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, u16)> + '_ {
        self.by_code
            .iter()
            .map(|(code, route)| (route.as_str(), *code))
    }

    /// The dictionary as the handshake's `dict` JSON object: `{"Room.Join": 1, …}`.
    #[must_use]
    pub fn to_json(&self) -> serde_json::Value {
        let map: serde_json::Map<String, serde_json::Value> = self
            .iter()
            .map(|(route, code)| (route.to_owned(), serde_json::Value::from(code)))
            .collect();
        serde_json::Value::Object(map)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_rejects_duplicates_and_keeps_order() {
        let mut dict = Dictionary::new();
        dict.insert("b", 7).unwrap();
        dict.insert("a", 0).unwrap();
        dict.insert("c", 3).unwrap();
        assert_eq!(
            dict.insert("a", 9),
            Err(DictError::DuplicateRoute("a".into()))
        );
        assert_eq!(dict.insert("z", 3), Err(DictError::DuplicateCode(3)));
        assert_eq!(dict.len(), 3);
        assert_eq!(
            dict.iter().collect::<Vec<_>>(),
            [("a", 0), ("c", 3), ("b", 7)]
        );
        for (route, code) in [("a", 0), ("b", 7), ("c", 3)] {
            assert_eq!(dict.code(route), Some(code));
            assert_eq!(dict.route(code).unwrap(), route);
        }
        assert_eq!(dict.route(1), None);
        assert_eq!(dict.route(u16::MAX), None);
    }

    #[test]
    fn from_json_round_trips() {
        let dict = Dictionary::from_routes(["x.Y", "a.B"]);
        assert_eq!(
            Dictionary::from_json(&dict.to_json())
                .unwrap()
                .iter()
                .collect::<Vec<_>>(),
            dict.iter().collect::<Vec<_>>()
        );
        assert_eq!(
            Dictionary::from_json(&serde_json::json!([1])).unwrap_err(),
            DictError::NotAnObject
        );
        assert_eq!(
            Dictionary::from_json(&serde_json::json!({"a": 70000})).unwrap_err(),
            DictError::InvalidCode("a".into())
        );
        assert_eq!(
            Dictionary::from_json(&serde_json::json!({"a": 1, "b": 1})).unwrap_err(),
            DictError::DuplicateCode(1)
        );
    }
}
