//! The typed view of an `impl` block: which methods are handlers, which are lifecycle hooks,
//! and what their signatures mean. Everything keeps a reference to the original syntax so later
//! stages can span errors and generated code on the user's tokens.

use proc_macro2::Span;
use syn::ext::IdentExt;
use syn::spanned::Spanned;
use syn::{
    FnArg, GenericArgument, ImplItem, ImplItemFn, Item, ItemImpl, PatType, PathArguments, Receiver,
    ReturnType, Type, Visibility,
};

use crate::attr::{self, ComponentAttrs, HandlerAttrs};
use crate::ctxt::Ctxt;

/// An inherent `impl` block under `#[component]`.
pub struct Component<'a> {
    pub original: &'a ItemImpl,
    pub attrs: ComponentAttrs,
    /// The component part of the routes (`Room`), if it could be determined.
    pub name: Option<String>,
    pub handlers: Vec<Handler<'a>>,
    pub hooks: Vec<Hook<'a>>,
}

/// A `pub fn` with a `self` receiver: one route.
pub struct Handler<'a> {
    pub original: &'a ImplItemFn,
    pub attrs: HandlerAttrs,
    /// The handler part of the route, after `rename_all` or `#[handler(name)]`.
    pub name: String,
    /// Where the name came from (the `name = "..."` literal or the method name).
    pub name_span: Span,
    pub receiver: &'a Receiver,
    /// The typed arguments after `self`.
    pub args: Vec<&'a PatType>,
}

/// A lifecycle hook method (`init`, `after_init`, `before_shutdown`, `shutdown`).
pub struct Hook<'a> {
    pub original: &'a ImplItemFn,
    pub kind: HookKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HookKind {
    Init,
    AfterInit,
    BeforeShutdown,
    Shutdown,
}

impl HookKind {
    pub fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "init" => HookKind::Init,
            "after_init" => HookKind::AfterInit,
            "before_shutdown" => HookKind::BeforeShutdown,
            "shutdown" => HookKind::Shutdown,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            HookKind::Init => "init",
            HookKind::AfterInit => "after_init",
            HookKind::BeforeShutdown => "before_shutdown",
            HookKind::Shutdown => "shutdown",
        }
    }
}

/// How a payload argument is decoded.
#[derive(Clone, Copy)]
pub enum Payload<'a> {
    /// `Bytes` / `Vec<u8>`: passed through.
    Raw(&'a Type),
    /// Anything else: decoded by the serializer.
    Typed(&'a Type),
}

impl<'a> Payload<'a> {
    pub fn ty(self) -> &'a Type {
        match self {
            Payload::Raw(ty) | Payload::Typed(ty) => ty,
        }
    }
}

/// How a handler's `Ok` value is sent back.
#[derive(Clone, Copy)]
pub enum Reply<'a> {
    /// `Result<()>`: an empty response.
    Unit,
    /// `Result<Bytes>` / `Result<Vec<u8>>`: the bytes as they are.
    Raw(&'a Type),
    /// Anything else: encoded by the serializer.
    Typed(&'a Type),
}

impl<'a> Component<'a> {
    /// Reads an item. Returns `None` (after reporting) when it is not an inherent impl block.
    pub fn from_item(cx: &Ctxt, item: &'a Item, attrs: ComponentAttrs) -> Option<Self> {
        let Item::Impl(original) = item else {
            cx.error_spanned_by(
                item_head(item),
                "#[component] must be placed on an inherent `impl` block",
            );
            return None;
        };
        if let Some((_, trait_path, for_token)) = &original.trait_ {
            cx.error_spanned_by(
                quote::quote!(#trait_path #for_token),
                "#[component] must be placed on an inherent `impl` block, not a trait impl",
            );
            return None;
        }

        let name = match &attrs.name {
            Some((_, lit)) => Some(lit.value()),
            None => match last_ident(&original.self_ty) {
                Some(ident) => Some(ident.unraw().to_string()),
                None => {
                    cx.error_spanned_by(
                        &original.self_ty,
                        "cannot name a component after this type; add `#[component(name = \"...\")]`",
                    );
                    None
                }
            },
        };

        let rule = attrs.rename_rule();
        let mut handlers = Vec::new();
        let mut hooks = Vec::new();
        for item in &original.items {
            let ImplItem::Fn(method) = item else {
                for attr in impl_item_attrs(item)
                    .iter()
                    .filter(|a| attr::is_handler_attr(a))
                {
                    cx.error_spanned_by(attr, "`#[handler]` can only be used on methods");
                }
                continue;
            };
            let hattrs = attr::parse_handler(cx, &method.attrs);
            if hattrs.skip.is_some() {
                continue;
            }
            let ident = method.sig.ident.unraw().to_string();
            if let Some(kind) = HookKind::from_name(&ident) {
                if let Some(marker) = &hattrs.marker {
                    cx.error_spanned_by(
                        marker,
                        format!(
                            "`{ident}` is a lifecycle hook, not a handler; rename the method and \
                             use `#[handler(name = \"...\")]` to serve this route"
                        ),
                    );
                }
                hooks.push(Hook {
                    original: method,
                    kind,
                });
                continue;
            }
            let is_pub = !matches!(method.vis, Visibility::Inherited);
            let receiver = method.sig.receiver();
            let Some(receiver) = receiver.filter(|_| is_pub) else {
                if let Some(marker) = &hattrs.marker {
                    cx.error_spanned_by(
                        marker,
                        "`#[handler]` applies only to `pub fn` methods with a `self` receiver",
                    );
                }
                continue;
            };
            let (name, name_span) = match &hattrs.name {
                Some((_, lit)) => (lit.value(), lit.span()),
                None => (rule.apply(&ident), method.sig.ident.span()),
            };
            let args = method
                .sig
                .inputs
                .iter()
                .filter_map(|arg| match arg {
                    FnArg::Typed(pat) => Some(pat),
                    FnArg::Receiver(_) => None,
                })
                .collect();
            handlers.push(Handler {
                original: method,
                attrs: hattrs,
                name,
                name_span,
                receiver,
                args,
            });
        }

        Some(Component {
            original,
            attrs,
            name,
            handlers,
            hooks,
        })
    }

    /// `Room.Join`.
    pub fn route(&self, handler: &Handler) -> String {
        format!("{}.{}", self.name.as_deref().unwrap_or(""), handler.name)
    }
}

/// What a handler argument after the session is, by its type.
#[derive(Clone, Copy)]
pub enum Arg<'a> {
    /// `&Context<..>` (also `&mut` / by value, rejected by `valid`): the component's context.
    Context(&'a Type),
    /// `Responder<T>`: the request's answer, sent later. Holds `T` when it has exactly one.
    Responder(&'a Type, Option<&'a Type>),
    /// Anything else: the payload.
    Payload(&'a Type),
}

impl<'a> Arg<'a> {
    pub fn classify(ty: &'a Type) -> Self {
        let inner = match peel(ty) {
            Type::Reference(r) => &*r.elem,
            other => other,
        };
        if last_segment(inner).is_some_and(|s| s.ident == "Context") {
            return Arg::Context(ty);
        }
        if let Some(seg) = last_segment(ty).filter(|s| s.ident == "Responder") {
            let t = match &seg.arguments {
                PathArguments::AngleBracketed(a) if a.args.len() == 1 => match &a.args[0] {
                    GenericArgument::Type(t) => Some(t),
                    _ => None,
                },
                _ => None,
            };
            return Arg::Responder(ty, t);
        }
        Arg::Payload(ty)
    }
}

fn last_segment(ty: &Type) -> Option<&syn::PathSegment> {
    match peel(ty) {
        Type::Path(p) if p.qself.is_none() => p.path.segments.last(),
        _ => None,
    }
}

impl<'a> Handler<'a> {
    /// The arguments after the session, classified.
    pub fn rest(&self) -> impl Iterator<Item = Arg<'a>> + '_ {
        self.args.iter().skip(1).map(|a| Arg::classify(&a.ty))
    }

    /// The `&Context<..>` argument, if any.
    pub fn context(&self) -> Option<&'a Type> {
        self.rest().find_map(|a| match a {
            Arg::Context(ty) => Some(ty),
            _ => None,
        })
    }

    /// The `Responder<T>`'s `T`, if the handler takes a (well-formed) responder.
    pub fn responder(&self) -> Option<Reply<'a>> {
        self.rest().find_map(|a| match a {
            Arg::Responder(_, Some(t)) => Some(classify_reply(t)),
            _ => None,
        })
    }

    /// Whether the handler takes a `Responder` argument (well-formed or not).
    pub fn takes_responder(&self) -> bool {
        self.rest().any(|a| matches!(a, Arg::Responder(..)))
    }

    /// The session type `T` of a `&T` first argument.
    pub fn session(&self) -> Option<&'a Type> {
        match &*self.args.first()?.ty {
            Type::Reference(r) if r.mutability.is_none() => Some(&r.elem),
            _ => None,
        }
    }

    pub fn payload(&self) -> Option<Payload<'a>> {
        let ty = self.rest().find_map(|a| match a {
            Arg::Payload(ty) => Some(ty),
            _ => None,
        })?;
        Some(if is_raw_bytes(ty) {
            Payload::Raw(ty)
        } else {
            Payload::Typed(ty)
        })
    }

    /// The `R` of a `Result<R>` / `Result<R, E>` return type.
    pub fn reply(&self) -> Option<Reply<'a>> {
        let ReturnType::Type(_, ty) = &self.original.sig.output else {
            return None;
        };
        Some(classify_reply(result_ok_type(ty)?))
    }

    /// Whether the handler returns nothing (`()`), as a handler with a `Responder` must.
    pub fn returns_unit(&self) -> bool {
        match &self.original.sig.output {
            ReturnType::Default => true,
            ReturnType::Type(_, ty) => is_unit(ty),
        }
    }

    pub fn is_async(&self) -> bool {
        self.original.sig.asyncness.is_some()
    }
}

fn classify_reply(ok: &Type) -> Reply<'_> {
    if is_unit(ok) {
        Reply::Unit
    } else if is_raw_bytes(ok) {
        Reply::Raw(ok)
    } else {
        Reply::Typed(ok)
    }
}

/// Removes `#[handler]` attributes from every item of an impl block (they are ours, not
/// attributes the compiler knows).
pub fn strip_handler_attrs(item: &mut ItemImpl) {
    for item in &mut item.items {
        let attrs = match item {
            ImplItem::Const(c) => &mut c.attrs,
            ImplItem::Fn(f) => &mut f.attrs,
            ImplItem::Type(t) => &mut t.attrs,
            ImplItem::Macro(m) => &mut m.attrs,
            _ => continue,
        };
        attrs.retain(|a| !attr::is_handler_attr(a));
    }
}

fn impl_item_attrs(item: &ImplItem) -> &[syn::Attribute] {
    match item {
        ImplItem::Const(c) => &c.attrs,
        ImplItem::Fn(f) => &f.attrs,
        ImplItem::Type(t) => &t.attrs,
        ImplItem::Macro(m) => &m.attrs,
        _ => &[],
    }
}

/// The tokens to underline when the item is of the wrong kind: its keyword and name.
fn item_head(item: &Item) -> proc_macro2::TokenStream {
    use quote::quote;
    match item {
        Item::Fn(f) => {
            let (fn_token, ident) = (&f.sig.fn_token, &f.sig.ident);
            quote!(#fn_token #ident)
        }
        Item::Struct(s) => {
            let (t, ident) = (&s.struct_token, &s.ident);
            quote!(#t #ident)
        }
        Item::Enum(e) => {
            let (t, ident) = (&e.enum_token, &e.ident);
            quote!(#t #ident)
        }
        Item::Trait(t) => {
            let (tt, ident) = (&t.trait_token, &t.ident);
            quote!(#tt #ident)
        }
        Item::Mod(m) => {
            let (t, ident) = (&m.mod_token, &m.ident);
            quote!(#t #ident)
        }
        other => {
            let span = other.span();
            quote::quote_spanned!(span=> item)
        }
    }
}

/// Looks through parentheses and invisible groups (types pasted by `macro_rules!`).
pub fn peel(mut ty: &Type) -> &Type {
    loop {
        match ty {
            Type::Group(g) => ty = &g.elem,
            Type::Paren(p) => ty = &p.elem,
            _ => return ty,
        }
    }
}

fn last_ident(ty: &Type) -> Option<&syn::Ident> {
    match peel(ty) {
        Type::Path(p) if p.qself.is_none() => p.path.segments.last().map(|s| &s.ident),
        _ => None,
    }
}

/// `()`.
pub fn is_unit(ty: &Type) -> bool {
    matches!(peel(ty), Type::Tuple(t) if t.elems.is_empty())
}

/// A path ending in `Bytes`, or `Vec<u8>` (by any path).
pub fn is_raw_bytes(ty: &Type) -> bool {
    let Type::Path(p) = peel(ty) else {
        return false;
    };
    if p.qself.is_some() {
        return false;
    }
    let Some(last) = p.path.segments.last() else {
        return false;
    };
    match &last.arguments {
        PathArguments::None => last.ident == "Bytes",
        PathArguments::AngleBracketed(args) if last.ident == "Vec" && args.args.len() == 1 => {
            matches!(
                &args.args[0],
                GenericArgument::Type(Type::Path(u)) if u.qself.is_none() && u.path.is_ident("u8")
            )
        }
        _ => false,
    }
}

/// The `R` of a path type `...::Result<R>` or `...::Result<R, E>`.
pub fn result_ok_type(ty: &Type) -> Option<&Type> {
    let Type::Path(p) = peel(ty) else {
        return None;
    };
    if p.qself.is_some() {
        return None;
    }
    let last = p.path.segments.last()?;
    if last.ident != "Result" {
        return None;
    }
    let PathArguments::AngleBracketed(args) = &last.arguments else {
        return None;
    };
    let mut types = args.args.iter().map(|a| match a {
        GenericArgument::Type(t) => Some(t),
        _ => None,
    });
    let ok = types.next()??;
    match (args.args.len(), types.next()) {
        (1, None) | (2, Some(Some(_))) => Some(ok),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use syn::parse_quote;

    #[test]
    fn raw_bytes() {
        for ty in [
            parse_quote!(Bytes),
            parse_quote!(bytes::Bytes),
            parse_quote!(::nano::Bytes),
            parse_quote!(Vec<u8>),
            parse_quote!(std::vec::Vec<u8>),
            parse_quote!((Vec<u8>)),
        ] {
            assert!(is_raw_bytes(&ty), "{}", quote::quote!(#ty));
        }
        for ty in [
            parse_quote!(Vec<u16>),
            parse_quote!(Vec<String>),
            parse_quote!(BytesMut),
            parse_quote!(Bytes<X>),
            parse_quote!(&[u8]),
            parse_quote!(<X as Y>::Bytes),
        ] {
            let ty: Type = ty;
            assert!(!is_raw_bytes(&ty), "{}", quote::quote!(#ty));
        }
    }

    #[test]
    fn result_types() {
        let ok = |ty: Type| result_ok_type(&ty).map(|t| quote::quote!(#t).to_string());
        assert_eq!(ok(parse_quote!(Result<Foo>)).as_deref(), Some("Foo"));
        assert_eq!(ok(parse_quote!(nano::Result<()>)).as_deref(), Some("()"));
        assert_eq!(
            ok(parse_quote!(std::result::Result<Vec<u8>, MyErr>)).as_deref(),
            Some("Vec < u8 >")
        );
        assert_eq!(ok(parse_quote!(Result)), None);
        assert_eq!(ok(parse_quote!(Result<A, B, C>)), None);
        assert_eq!(ok(parse_quote!(Result<'a, A>)), None);
        assert_eq!(ok(parse_quote!(Option<A>)), None);
        assert_eq!(ok(parse_quote!(Foo)), None);
        assert_eq!(ok(parse_quote!(())), None);
    }

    #[test]
    fn units() {
        assert!(is_unit(&parse_quote!(())));
        assert!(!is_unit(&parse_quote!((u8,))));
    }

    #[test]
    fn classification() {
        let item: Item = parse_quote! {
            impl r#Room {
                pub fn join(&mut self, s: &Session, req: Join) -> Result<Joined> { todo!() }
                #[handler(name = "msg")]
                pub(crate) async fn message(&self, s: &Session, b: Bytes) -> Result<()> { todo!() }
                #[handler(skip)]
                pub fn helper(&self) -> u32 { 1 }
                pub fn new() -> Self { todo!() }
                fn private(&self) {}
                fn init(&mut self, ctx: &Context<Self>) {}
            }
        };
        let cx = Ctxt::new();
        let c = Component::from_item(&cx, &item, ComponentAttrs::default()).unwrap();
        cx.check().unwrap();
        assert_eq!(c.name.as_deref(), Some("Room"));
        let names: Vec<_> = c.handlers.iter().map(|h| c.route(h)).collect();
        assert_eq!(names, ["Room.Join", "Room.msg"]);
        assert!(matches!(c.handlers[0].payload(), Some(Payload::Typed(_))));
        assert!(matches!(c.handlers[0].reply(), Some(Reply::Typed(_))));
        assert!(matches!(c.handlers[1].payload(), Some(Payload::Raw(_))));
        assert!(matches!(c.handlers[1].reply(), Some(Reply::Unit)));
        assert!(c.handlers[1].is_async());
        assert_eq!(c.hooks.len(), 1);
        assert_eq!(c.hooks[0].kind, HookKind::Init);
    }

    #[test]
    fn not_an_impl() {
        let item: Item = parse_quote!(
            struct Room;
        );
        let cx = Ctxt::new();
        assert!(Component::from_item(&cx, &item, ComponentAttrs::default()).is_none());
        assert!(cx.check().is_err());
    }
}
