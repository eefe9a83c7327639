//! Attribute parsing: `#[component(...)]` arguments and `#[handler(...)]` method attributes.
//!
//! Every option is stored as `Option<(keyword, value)>` so a duplicate can be reported on the
//! second keyword. Problems are reported into the [`Ctxt`] rather than returned, so that every
//! bad attribute shows in one compile.

use heck::{
    ToKebabCase, ToLowerCamelCase, ToShoutyKebabCase, ToShoutySnakeCase, ToSnakeCase,
    ToUpperCamelCase,
};
use proc_macro2::TokenStream;
use quote::ToTokens;
use syn::parse::{ParseStream, Parser};
use syn::{Attribute, LitStr, Meta, Path, Token};

use crate::ctxt::Ctxt;

mod kw {
    syn::custom_keyword!(internal);
    syn::custom_keyword!(name);
    syn::custom_keyword!(rename_all);
    syn::custom_keyword!(serializer);
    syn::custom_keyword!(skip);
    syn::custom_keyword!(pushes);
}

/// Arguments of `#[component(...)]`.
#[derive(Default)]
pub struct ComponentAttrs {
    /// `name = "room"`: the component part of the routes.
    pub name: Option<(kw::name, LitStr)>,
    /// `rename_all = "camelCase"`: how method names become handler names.
    pub rename_all: Option<(kw::rename_all, RenameRule)>,
    /// `serializer = Protobuf`: the serializer, instead of the handlers' session type.
    pub serializer: Option<(kw::serializer, Path)>,
    /// `crate = ::nano_core`: the crate whose `__private` module generated code uses.
    pub krate: Option<(Token![crate], Path)>,
    /// `internal`: every handler is callable by other cluster nodes only.
    pub internal: Option<kw::internal>,
    /// `pushes(onMessage = UserMessage, "on.tick" = Tick)`: the pushes the component sends,
    /// with their payload types.
    pub pushes: Vec<(LitStr, syn::Type)>,
}

impl ComponentAttrs {
    /// The handler naming rule (`PascalCase` unless `rename_all` says otherwise).
    pub fn rename_rule(&self) -> RenameRule {
        self.rename_all
            .as_ref()
            .map_or(RenameRule::PascalCase, |(_, rule)| *rule)
    }
}

/// Parses the tokens inside `#[component(...)]`.
pub fn parse_component(cx: &Ctxt, args: TokenStream) -> ComponentAttrs {
    let mut attrs = ComponentAttrs::default();
    let parser = |input: ParseStream| -> syn::Result<()> {
        while !input.is_empty() {
            let lookahead = input.lookahead1();
            if lookahead.peek(kw::name) {
                let key: kw::name = input.parse()?;
                input.parse::<Token![=]>()?;
                let value: LitStr = input.parse()?;
                set(cx, &mut attrs.name, key, value, "name");
            } else if lookahead.peek(kw::internal) {
                let key: kw::internal = input.parse()?;
                if attrs.internal.is_some() {
                    cx.error_spanned_by(key, "duplicate `internal` argument");
                } else {
                    attrs.internal = Some(key);
                }
            } else if lookahead.peek(kw::pushes) {
                let key: kw::pushes = input.parse()?;
                let content;
                syn::parenthesized!(content in input);
                let list = content.parse_terminated(
                    |p: ParseStream| {
                        let route = if p.peek(LitStr) {
                            p.parse::<LitStr>()?
                        } else {
                            let id: syn::Ident = p.parse()?;
                            LitStr::new(&id.to_string(), id.span())
                        };
                        p.parse::<Token![=]>()?;
                        let ty: syn::Type = p.parse()?;
                        Ok((route, ty))
                    },
                    Token![,],
                )?;
                if !attrs.pushes.is_empty() {
                    cx.error_spanned_by(key, "duplicate `pushes` argument");
                }
                for (route, ty) in list {
                    if route.value().is_empty() {
                        cx.error_spanned_by(&route, "a push route cannot be empty");
                    } else if attrs.pushes.iter().any(|(r, _)| r.value() == route.value()) {
                        cx.error_spanned_by(
                            &route,
                            format!("push `{}` declared twice", route.value()),
                        );
                    } else {
                        attrs.pushes.push((route, ty));
                    }
                }
            } else if lookahead.peek(kw::rename_all) {
                let key: kw::rename_all = input.parse()?;
                input.parse::<Token![=]>()?;
                let value: LitStr = input.parse()?;
                let rule = RenameRule::from_str(&value.value()).unwrap_or_else(|| {
                    cx.error_spanned_by(
                        &value,
                        format!(
                            "unknown `rename_all` rule {:?}; expected one of: {}",
                            value.value(),
                            RenameRule::NAMES
                                .iter()
                                .map(|n| format!("\"{n}\""))
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    );
                    RenameRule::PascalCase
                });
                set(cx, &mut attrs.rename_all, key, rule, "rename_all");
            } else if lookahead.peek(kw::serializer) {
                let key: kw::serializer = input.parse()?;
                input.parse::<Token![=]>()?;
                let value: Path = input.parse()?;
                set(cx, &mut attrs.serializer, key, value, "serializer");
            } else if lookahead.peek(Token![crate]) {
                let key: Token![crate] = input.parse()?;
                input.parse::<Token![=]>()?;
                let value = if input.peek(LitStr) {
                    input.parse::<LitStr>()?.parse_with(Path::parse_mod_style)?
                } else {
                    Path::parse_mod_style(input)?
                };
                set(cx, &mut attrs.krate, key, value, "crate");
            } else {
                return Err(lookahead.error());
            }
            if input.is_empty() {
                break;
            }
            input.parse::<Token![,]>()?;
        }
        Ok(())
    };
    if let Err(err) = parser.parse2(args) {
        cx.syn_error(err);
    }
    attrs
}

/// `#[handler(...)]` attributes of one method, merged.
#[derive(Default)]
pub struct HandlerAttrs {
    /// The first `#[handler...]` attribute's path, if any.
    pub marker: Option<Path>,
    /// `skip`: the method is not a handler (nor a lifecycle hook).
    pub skip: Option<kw::skip>,
    /// `name = "join"`: the exact handler name.
    pub name: Option<(kw::name, LitStr)>,
    /// `internal`: callable by other cluster nodes only; a client gets `NANO-404`.
    pub internal: Option<kw::internal>,
}

/// Whether `attr` is a `#[handler]` attribute (the ones `#[component]` consumes).
pub fn is_handler_attr(attr: &Attribute) -> bool {
    attr.path().is_ident("handler")
}

/// Parses every `#[handler]` attribute in `attrs`.
pub fn parse_handler(cx: &Ctxt, attrs: &[Attribute]) -> HandlerAttrs {
    let mut out = HandlerAttrs::default();
    for attr in attrs.iter().filter(|a| is_handler_attr(a)) {
        if out.marker.is_none() {
            out.marker = Some(attr.path().clone());
        }
        let list = match &attr.meta {
            Meta::Path(_) => continue,
            Meta::List(list) => list,
            Meta::NameValue(_) => {
                cx.error_spanned_by(
                    attr,
                    "expected `#[handler(skip)]`, `#[handler(internal)]` or `#[handler(name = \"...\")]`",
                );
                continue;
            }
        };
        let parser = |input: ParseStream| -> syn::Result<()> {
            while !input.is_empty() {
                let lookahead = input.lookahead1();
                if lookahead.peek(kw::skip) {
                    let key: kw::skip = input.parse()?;
                    if out.skip.is_some() {
                        cx.error_spanned_by(key, "duplicate `skip` argument");
                    } else {
                        out.skip = Some(key);
                    }
                } else if lookahead.peek(kw::name) {
                    let key: kw::name = input.parse()?;
                    input.parse::<Token![=]>()?;
                    let value: LitStr = input.parse()?;
                    set(cx, &mut out.name, key, value, "name");
                } else if lookahead.peek(kw::internal) {
                    let key: kw::internal = input.parse()?;
                    if out.internal.is_some() {
                        cx.error_spanned_by(key, "duplicate `internal` argument");
                    } else {
                        out.internal = Some(key);
                    }
                } else {
                    return Err(lookahead.error());
                }
                if input.is_empty() {
                    break;
                }
                input.parse::<Token![,]>()?;
            }
            Ok(())
        };
        if let Err(err) = parser.parse2(list.tokens.clone()) {
            cx.syn_error(err);
        }
    }
    if let (Some(_), Some((key, _))) = (&out.skip, &out.name) {
        cx.error_spanned_by(key, "`name` has no effect on a `skip`ped method");
    }
    if let (Some(_), Some(key)) = (&out.skip, &out.internal) {
        cx.error_spanned_by(key, "`internal` has no effect on a `skip`ped method");
    }
    out
}

fn set<K: ToTokens, T>(cx: &Ctxt, slot: &mut Option<(K, T)>, key: K, value: T, what: &str) {
    if slot.is_some() {
        cx.error_spanned_by(key, format!("duplicate `{what}` argument"));
    } else {
        *slot = Some((key, value));
    }
}

/// How method names become handler names (`rename_all`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RenameRule {
    /// `SendMessage` (the default, as go-nano's exported method names).
    PascalCase,
    /// `sendmessage` (go-nano's `strings.ToLower` name func).
    Lowercase,
    /// `SENDMESSAGE`.
    Uppercase,
    /// `sendMessage`.
    CamelCase,
    /// `send_message`.
    SnakeCase,
    /// `SEND_MESSAGE`.
    ScreamingSnakeCase,
    /// `send-message`.
    KebabCase,
    /// `SEND-MESSAGE`.
    ScreamingKebabCase,
}

impl RenameRule {
    /// The accepted spellings, for error messages.
    pub const NAMES: &'static [&'static str] = &[
        "PascalCase",
        "UpperCamelCase",
        "lowercase",
        "UPPERCASE",
        "camelCase",
        "snake_case",
        "SCREAMING_SNAKE_CASE",
        "kebab-case",
        "SCREAMING-KEBAB-CASE",
    ];

    /// Parses a rule name as written in `rename_all = "..."`.
    pub fn from_str(s: &str) -> Option<Self> {
        Some(match s {
            "PascalCase" | "UpperCamelCase" => RenameRule::PascalCase,
            "lowercase" => RenameRule::Lowercase,
            "UPPERCASE" => RenameRule::Uppercase,
            "camelCase" => RenameRule::CamelCase,
            "snake_case" => RenameRule::SnakeCase,
            "SCREAMING_SNAKE_CASE" => RenameRule::ScreamingSnakeCase,
            "kebab-case" => RenameRule::KebabCase,
            "SCREAMING-KEBAB-CASE" => RenameRule::ScreamingKebabCase,
            _ => return None,
        })
    }

    /// The handler name for a method named `method` (a Rust identifier, `r#` already removed).
    pub fn apply(self, method: &str) -> String {
        match self {
            RenameRule::PascalCase => method.to_upper_camel_case(),
            RenameRule::Lowercase => method.to_upper_camel_case().to_lowercase(),
            RenameRule::Uppercase => method.to_upper_camel_case().to_uppercase(),
            RenameRule::CamelCase => method.to_lower_camel_case(),
            RenameRule::SnakeCase => method.to_snake_case(),
            RenameRule::ScreamingSnakeCase => method.to_shouty_snake_case(),
            RenameRule::KebabCase => method.to_kebab_case(),
            RenameRule::ScreamingKebabCase => method.to_shouty_kebab_case(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quote::quote;

    fn all(method: &str) -> Vec<String> {
        RenameRule::NAMES
            .iter()
            .map(|n| RenameRule::from_str(n).unwrap().apply(method))
            .collect()
    }

    #[test]
    fn rename_rules() {
        assert_eq!(
            all("send_message"),
            [
                "SendMessage",
                "SendMessage",
                "sendmessage",
                "SENDMESSAGE",
                "sendMessage",
                "send_message",
                "SEND_MESSAGE",
                "send-message",
                "SEND-MESSAGE",
            ]
        );
    }

    #[test]
    fn single_word_and_digits() {
        assert_eq!(RenameRule::PascalCase.apply("join"), "Join");
        assert_eq!(RenameRule::Lowercase.apply("join"), "join");
        assert_eq!(RenameRule::PascalCase.apply("update_v2"), "UpdateV2");
        assert_eq!(RenameRule::CamelCase.apply("get_user_id"), "getUserId");
    }

    #[test]
    fn already_cased_method_names() {
        // Non-snake method names (allowed with `#[allow(non_snake_case)]`) are re-cased too.
        assert_eq!(RenameRule::PascalCase.apply("sendMessage"), "SendMessage");
        assert_eq!(RenameRule::SnakeCase.apply("SendMessage"), "send_message");
    }

    #[test]
    fn unknown_rule() {
        assert_eq!(RenameRule::from_str("lower_case"), None);
        assert_eq!(RenameRule::from_str("pascalcase"), None);
    }

    #[test]
    fn component_args() {
        let cx = Ctxt::new();
        let a = parse_component(
            &cx,
            quote!(
                name = "room",
                rename_all = "lowercase",
                serializer = nano::Protobuf,
                crate = ::nano_core
            ),
        );
        cx.check().unwrap();
        assert_eq!(a.name.unwrap().1.value(), "room");
        assert_eq!(a.rename_all.unwrap().1, RenameRule::Lowercase);
        assert!(a.serializer.is_some());
        assert!(a.krate.is_some());
    }

    #[test]
    fn pushes_by_name_or_string() {
        let cx = Ctxt::new();
        let a = parse_component(&cx, quote!(pushes(onMessage = Msg, "world.tick" = u64,)));
        cx.check().unwrap();
        let routes: Vec<String> = a.pushes.iter().map(|(r, _)| r.value()).collect();
        assert_eq!(routes, ["onMessage", "world.tick"]);
    }

    #[test]
    fn crate_as_string() {
        let cx = Ctxt::new();
        let a = parse_component(&cx, quote!(crate = "::nano_core",));
        cx.check().unwrap();
        let path = a.krate.unwrap().1;
        assert_eq!(quote!(#path).to_string(), ":: nano_core");
    }

    fn errors(cx: Ctxt) -> Vec<String> {
        match cx.check() {
            Ok(()) => vec![],
            Err(e) => e.into_iter().map(|e| e.to_string()).collect(),
        }
    }

    #[test]
    fn component_arg_errors() {
        let cx = Ctxt::new();
        parse_component(&cx, quote!(nmae = "x"));
        assert_eq!(
            errors(cx),
            ["expected one of: `name`, `internal`, `pushes`, `rename_all`, `serializer`, `crate`"]
        );

        let cx = Ctxt::new();
        parse_component(&cx, quote!(pushes(onA = u32, onA = String, "" = u8)));
        assert_eq!(
            errors(cx),
            ["push `onA` declared twice", "a push route cannot be empty"]
        );

        let cx = Ctxt::new();
        parse_component(&cx, quote!(name = "a", rename_all = "nope", name = "b"));
        let e = errors(cx);
        assert_eq!(e.len(), 2);
        assert!(
            e[0].starts_with("unknown `rename_all` rule \"nope\""),
            "{e:?}"
        );
        assert_eq!(e[1], "duplicate `name` argument");
    }

    #[test]
    fn handler_attrs() {
        let cx = Ctxt::new();
        let attrs: Vec<Attribute> = vec![
            syn::parse_quote!(#[doc = "x"]),
            syn::parse_quote!(#[handler(name = "join")]),
        ];
        let h = parse_handler(&cx, &attrs);
        cx.check().unwrap();
        assert!(h.marker.is_some());
        assert!(h.skip.is_none());
        assert_eq!(h.name.unwrap().1.value(), "join");

        let cx = Ctxt::new();
        let attrs: Vec<Attribute> = vec![
            syn::parse_quote!(#[handler(skip)]),
            syn::parse_quote!(#[handler(name = "a", skip)]),
            syn::parse_quote!(#[handler(bogus)]),
            syn::parse_quote!(#[handler = "x"]),
        ];
        parse_handler(&cx, &attrs);
        assert_eq!(
            errors(cx),
            [
                "duplicate `skip` argument",
                "expected one of: `skip`, `name`, `internal`",
                "expected `#[handler(skip)]`, `#[handler(internal)]` or `#[handler(name = \"...\")]`",
                "`name` has no effect on a `skip`ped method",
            ]
        );
    }
}
