//! [`RouteName`]: a validated UTF-8 route backed by `Bytes`.

use std::borrow::Borrow;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::ops::Deref;

use bytes::Bytes;

use super::MessageError;

/// A route (`Room.Join`, `onMessage`, …): validated UTF-8 held in [`Bytes`].
///
/// A decoded route is a zero-copy slice of the packet; a route resolved through a
/// [`Dictionary`](super::Dictionary) shares the dictionary's bytes. Cloning is a reference
/// count increment. It hashes and compares like its `str`, so a `HashMap<RouteName, _>` can
/// be queried with a `&str`.
///
/// # Examples
///
/// ```
/// use std::collections::HashMap;
/// use nano_core::protocol::RouteName;
///
/// let route = RouteName::from_static("Room.Join");
/// assert_eq!(route, "Room.Join");
/// assert_eq!(route.len(), 9); // derefs to str
///
/// let mut handlers = HashMap::new();
/// handlers.insert(route, 0usize);
/// assert_eq!(handlers.get("Room.Join"), Some(&0));
/// ```
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct RouteName(
    /// Invariant: valid UTF-8.
    Bytes,
);

impl RouteName {
    /// The route as a string slice.
    #[inline]
    #[must_use]
    pub fn as_str(&self) -> &str {
        // SAFETY: every constructor either takes a `str`/`String` or validates the bytes
        // with `std::str::from_utf8`, and the bytes are immutable afterwards.
        unsafe { std::str::from_utf8_unchecked(&self.0) }
    }

    /// A route from a static string, without allocating.
    #[inline]
    #[must_use]
    pub const fn from_static(route: &'static str) -> Self {
        RouteName(Bytes::from_static(route.as_bytes()))
    }

    /// Validates `bytes` as UTF-8 and wraps them without copying.
    ///
    /// # Errors
    ///
    /// [`MessageError::RouteNotUtf8`] if the bytes are not valid UTF-8.
    ///
    /// # Examples
    ///
    /// ```
    /// use bytes::Bytes;
    /// use nano_core::protocol::{MessageError, RouteName};
    ///
    /// assert_eq!(RouteName::try_from_bytes(Bytes::from_static(b"onChat"))?, "onChat");
    /// assert_eq!(
    ///     RouteName::try_from_bytes(Bytes::from_static(b"\xff")),
    ///     Err(MessageError::RouteNotUtf8)
    /// );
    /// # Ok::<(), MessageError>(())
    /// ```
    #[inline]
    pub fn try_from_bytes(bytes: Bytes) -> Result<Self, MessageError> {
        match std::str::from_utf8(&bytes) {
            Ok(_) => Ok(RouteName(bytes)),
            Err(_) => Err(MessageError::RouteNotUtf8),
        }
    }

    /// The route's UTF-8 bytes.
    #[inline]
    #[must_use]
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The underlying shared bytes.
    #[inline]
    #[must_use]
    pub fn into_bytes(self) -> Bytes {
        self.0
    }
}

impl From<&str> for RouteName {
    /// Copies the string.
    #[inline]
    fn from(route: &str) -> Self {
        RouteName(Bytes::copy_from_slice(route.as_bytes()))
    }
}

impl From<String> for RouteName {
    /// Takes the string's buffer without copying.
    #[inline]
    fn from(route: String) -> Self {
        RouteName(Bytes::from(route.into_bytes()))
    }
}

impl From<&RouteName> for RouteName {
    #[inline]
    fn from(route: &RouteName) -> Self {
        route.clone()
    }
}

impl Deref for RouteName {
    type Target = str;

    #[inline]
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<str> for RouteName {
    #[inline]
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl Borrow<str> for RouteName {
    #[inline]
    fn borrow(&self) -> &str {
        self.as_str()
    }
}

impl Hash for RouteName {
    /// Hashes like the `str`, as `Borrow<str>` requires.
    #[inline]
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

impl PartialEq<str> for RouteName {
    #[inline]
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for RouteName {
    #[inline]
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl PartialEq<RouteName> for str {
    #[inline]
    fn eq(&self, other: &RouteName) -> bool {
        self == other.as_str()
    }
}

impl PartialEq<RouteName> for &str {
    #[inline]
    fn eq(&self, other: &RouteName) -> bool {
        *self == other.as_str()
    }
}

impl fmt::Display for RouteName {
    #[inline]
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for RouteName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}
