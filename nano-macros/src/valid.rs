//! The rules a component must follow. Every violation is reported into the [`Ctxt`], spanned on
//! the offending tokens; [`expand`](crate::expand) only ever sees a component that passed.

use std::collections::HashMap;

use proc_macro2::TokenStream;
use quote::ToTokens;
use syn::{GenericParam, Generics, ReturnType, Signature, Type};

use crate::ast::{self, Arg, Component, Handler, Hook, Payload};
use crate::ctxt::Ctxt;

pub fn check(cx: &Ctxt, component: &Component) {
    check_impl(cx, component);
    for handler in &component.handlers {
        check_handler(cx, handler);
    }
    check_duplicate_routes(cx, component);
    for hook in &component.hooks {
        check_hook(cx, hook);
    }
}

fn check_impl(cx: &Ctxt, component: &Component) {
    let generics = &component.original.generics;
    if !generics.params.is_empty() {
        cx.error_spanned_by(
            generics,
            "#[component] does not support generic impl blocks yet",
        );
    }
    if let Some((_, lit)) = &component.attrs.name {
        check_name(cx, lit, "component");
    }
}

fn check_name(cx: &Ctxt, lit: &syn::LitStr, what: &str) {
    let name = lit.value();
    if name.is_empty() || name.contains('.') || name.chars().any(char::is_whitespace) {
        cx.error_spanned_by(
            lit,
            format!("a {what} name must be non-empty, without `.` or whitespace"),
        );
    }
}

fn check_handler(cx: &Ctxt, handler: &Handler) {
    let sig = &handler.original.sig;

    if !is_ref_self(&handler.receiver.ty) {
        cx.error_spanned_by(
            handler.receiver,
            "handler receiver must be `&self` or `&mut self`",
        );
    }
    if let Some(unsafety) = &sig.unsafety {
        cx.error_spanned_by(unsafety, "a handler cannot be an `unsafe fn`");
    }
    if let Some(params) = type_or_const_params(&sig.generics) {
        cx.error_spanned_by(params, "a handler cannot have generic parameters");
    }
    if let Some((_, lit)) = &handler.attrs.name {
        check_name(cx, lit, "handler");
    }

    match handler.args.first() {
        None => cx.error_spanned_by(
            signature_head(sig),
            "handler must take `&Session` as its first argument after `self` \
             (mark helper methods `#[handler(skip)]`)",
        ),
        Some(arg) => match &*arg.ty {
            Type::Reference(r) if r.mutability.is_some() => cx.error_spanned_by(
                &arg.ty,
                "the session is shared: take `&Session`, not `&mut Session`",
            ),
            Type::Reference(_) => {}
            _ => cx.error_spanned_by(
                &arg.ty,
                "handler must take `&Session` as its first argument after `self` \
                 (mark helper methods `#[handler(skip)]`)",
            ),
        },
    }

    if let Some(Payload::Typed(ty)) = handler.payload() {
        match ast::peel(ty) {
            Type::Reference(_) => cx.error_spanned_by(
                ty,
                "a handler payload must be an owned type (it is decoded for each request), \
                 not a reference",
            ),
            Type::ImplTrait(_) => cx.error_spanned_by(
                ty,
                "a handler payload cannot be `impl Trait`; name the payload type",
            ),
            _ => {}
        }
    }

    check_extra_args(cx, handler);

    if handler.takes_responder() {
        if !handler.returns_unit() {
            if let ReturnType::Type(arrow, ty) = &sig.output {
                cx.error_spanned_by(
                    quote::quote!(#arrow #ty),
                    "a handler that takes a `Responder` answers through it: it returns nothing \
                     (remove the return type)",
                );
            }
        }
    } else if handler.reply().is_none() {
        const MSG: &str = "handler must return `Result<T>`; use `Result<()>` for no response body";
        match &sig.output {
            ReturnType::Default => cx.error_spanned_by(signature_head(sig), MSG),
            ReturnType::Type(_, ty) => cx.error_spanned_by(ty, MSG),
        }
    }
}

/// The arguments after the session: at most one payload, one `&Context<Self>`, one
/// `Responder<T>`, in any order.
fn check_extra_args(cx: &Ctxt, handler: &Handler) {
    let (mut payloads, mut contexts, mut responders) = (0, 0, 0);
    for arg in handler.rest() {
        match arg {
            Arg::Payload(ty) => {
                payloads += 1;
                if payloads > 1 {
                    cx.error_spanned_by(
                        ty,
                        "handler takes `&Session`, at most one payload, and optionally \
                         `&Context<Self>` and a `Responder<T>`",
                    );
                }
            }
            Arg::Context(ty) => {
                contexts += 1;
                if contexts > 1 {
                    cx.error_spanned_by(ty, "a handler takes at most one `&Context<Self>`");
                }
                if !matches!(ast::peel(ty), Type::Reference(r) if r.mutability.is_none()) {
                    cx.error_spanned_by(
                        ty,
                        "the component's context is shared: take `&Context<Self>`",
                    );
                }
            }
            Arg::Responder(ty, inner) => {
                responders += 1;
                if responders > 1 {
                    cx.error_spanned_by(ty, "a handler takes at most one `Responder`");
                }
                if inner.is_none() {
                    cx.error_spanned_by(
                        ty,
                        "`Responder` takes the response type: `Responder<T>` (`Responder<()>` \
                         for an empty response)",
                    );
                }
            }
        }
    }
}

fn check_duplicate_routes(cx: &Ctxt, component: &Component) {
    let mut seen: HashMap<&str, &Handler> = HashMap::new();
    for handler in &component.handlers {
        if let Some(first) = seen.get(handler.name.as_str()) {
            cx.syn_error(syn::Error::new(
                handler.name_span,
                format!(
                    "duplicate route `{}`: `{}` already serves it",
                    component.route(handler),
                    first.original.sig.ident
                ),
            ));
        } else {
            seen.insert(&handler.name, handler);
        }
    }
}

fn check_hook(cx: &Ctxt, hook: &Hook) {
    let sig = &hook.original.sig;
    let mut inputs = sig.inputs.iter();
    let receiver_ok = matches!(
        inputs.next(),
        Some(syn::FnArg::Receiver(r)) if is_ref_self(&r.ty)
    );
    let ctx_ok = matches!(
        inputs.next(),
        Some(syn::FnArg::Typed(arg)) if matches!(&*arg.ty, Type::Reference(r) if r.mutability.is_none())
    );
    let output_ok = match &sig.output {
        ReturnType::Default => true,
        ReturnType::Type(_, ty) => ast::is_unit(ty),
    };
    let ok = receiver_ok
        && ctx_ok
        && inputs.next().is_none()
        && output_ok
        && sig.asyncness.is_none()
        && sig.unsafety.is_none()
        && type_or_const_params(&sig.generics).is_none();
    if !ok {
        let name = hook.kind.name();
        let mut tokens = signature_head(sig);
        sig.output.to_tokens(&mut tokens);
        cx.error_spanned_by(
            tokens,
            format!(
                "lifecycle hook `{name}` must be `fn {name}(&mut self, ctx: &Context<Self>)` \
                 (mark other methods with this name `#[handler(skip)]`)"
            ),
        );
    }
}

/// `&Self`, `&mut Self`, `&'a Self` (what `&self` / `&mut self` desugar to).
fn is_ref_self(ty: &Type) -> bool {
    match ty {
        Type::Reference(r) => {
            matches!(&*r.elem, Type::Path(p) if p.qself.is_none() && p.path.is_ident("Self"))
        }
        _ => false,
    }
}

/// The generics to underline when there are type or const parameters (lifetimes are fine),
/// or when an argument is `impl Trait`.
fn type_or_const_params(generics: &Generics) -> Option<&Generics> {
    generics
        .params
        .iter()
        .any(|p| !matches!(p, GenericParam::Lifetime(_)))
        .then_some(generics)
}

/// `async fn name(args)`: what to underline for errors about the signature as a whole.
fn signature_head(sig: &Signature) -> TokenStream {
    let mut tokens = TokenStream::new();
    sig.asyncness.to_tokens(&mut tokens);
    sig.fn_token.to_tokens(&mut tokens);
    sig.ident.to_tokens(&mut tokens);
    sig.paren_token
        .surround(&mut tokens, |t| sig.inputs.to_tokens(t));
    tokens
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attr::ComponentAttrs;
    use syn::{parse_quote, Item};

    fn errors(item: Item) -> Vec<String> {
        let cx = Ctxt::new();
        if let Some(c) = Component::from_item(&cx, &item, ComponentAttrs::default()) {
            check(&cx, &c);
        }
        match cx.check() {
            Ok(()) => vec![],
            Err(e) => e.into_iter().map(|e| e.to_string()).collect(),
        }
    }

    #[test]
    fn valid_component() {
        let e = errors(parse_quote! {
            impl Room {
                pub fn a(&self, s: &Session) -> Result<()> { todo!() }
                pub fn b<'x>(&'x mut self, s: &'x Session, p: Vec<u8>) -> nano::Result<Bytes> { todo!() }
                pub async fn c(self: &Self, s: &Session<Protobuf>, p: Foo) -> Result<Foo, E> { todo!() }
                pub fn init(&mut self, ctx: &Context<Self>) {}
                fn shutdown(&self, ctx: &nano::Context<Room>) -> () {}
            }
        });
        assert!(e.is_empty(), "{e:?}");
    }

    #[test]
    fn every_error_is_reported() {
        let e = errors(parse_quote! {
            impl<T> Room<T> {
                pub fn a(self, s: &Session) -> Result<()> { todo!() }
                pub fn b(&self) -> Result<()> { todo!() }
                pub fn c(&self, s: Session) -> Result<()> { todo!() }
                pub fn d(&self, s: &Session, p: u8, q: u8, r: u8) -> Result<()> { todo!() }
                pub fn e(&self, s: &Session) {}
                pub fn f<P>(&self, s: &Session, p: P) -> Option<()> { todo!() }
                #[handler(name = "A")]
                pub fn g(&self, s: &Session, p: &str) -> Result<()> { todo!() }
                pub fn init(&mut self) {}
            }
        });
        assert_eq!(
            e,
            [
                "#[component] does not support generic impl blocks yet",
                "handler receiver must be `&self` or `&mut self`",
                "handler must take `&Session` as its first argument after `self` (mark helper methods `#[handler(skip)]`)",
                "handler must take `&Session` as its first argument after `self` (mark helper methods `#[handler(skip)]`)",
                "handler takes `&Session`, at most one payload, and optionally `&Context<Self>` and a `Responder<T>`",
                "handler takes `&Session`, at most one payload, and optionally `&Context<Self>` and a `Responder<T>`",
                "handler must return `Result<T>`; use `Result<()>` for no response body",
                "a handler cannot have generic parameters",
                "handler must return `Result<T>`; use `Result<()>` for no response body",
                "a handler payload must be an owned type (it is decoded for each request), not a reference",
                "duplicate route `Room.A`: `a` already serves it",
                "lifecycle hook `init` must be `fn init(&mut self, ctx: &Context<Self>)` (mark other methods with this name `#[handler(skip)]`)",
            ]
        );
    }

    #[test]
    fn bad_names() {
        let e = errors(parse_quote! {
            impl Room {
                #[handler(name = "a.b")]
                pub fn a(&self, s: &Session) -> Result<()> { todo!() }
                #[handler(name = "")]
                pub fn b(&self, s: &Session) -> Result<()> { todo!() }
            }
        });
        assert_eq!(e.len(), 2);
    }

    #[test]
    fn trait_impls_and_items() {
        let e = errors(parse_quote!(
            impl Drop for Room {
                fn drop(&mut self) {}
            }
        ));
        assert_eq!(
            e,
            ["#[component] must be placed on an inherent `impl` block, not a trait impl"]
        );
        let e = errors(parse_quote!(
            fn room() {}
        ));
        assert_eq!(
            e,
            ["#[component] must be placed on an inherent `impl` block"]
        );
    }

    #[test]
    fn misplaced_handler_attrs() {
        let e = errors(parse_quote! {
            impl Room {
                #[handler]
                fn private(&self, s: &Session) -> Result<()> { todo!() }
                #[handler(name = "X")]
                pub fn init(&mut self, ctx: &Context<Self>) {}
                #[handler]
                const X: u8 = 1;
                #[handler(skip)]
                pub fn shutdown(&self) -> u8 { 1 }
            }
        });
        assert_eq!(e.len(), 3, "{e:?}");
    }
}
