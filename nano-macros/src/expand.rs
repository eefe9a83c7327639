//! Code generation. [`component`] drives the pipeline (attributes → AST → rules → code);
//! [`generate`] assumes a component that passed [`valid::check`].
//!
//! Generated code names the runtime only through `<crate>::__private` (`::nano` by default), and
//! every call whose trait bounds depend on a user type (`Decode`, `Encode`, `SessionType`) is
//! spanned on that type, so an unsatisfied bound is reported on the user's code.

use proc_macro2::{Group, Literal, Span, TokenStream, TokenTree};
use quote::{quote, quote_spanned, ToTokens};
use syn::spanned::Spanned;
use syn::{Item, LitStr};

use crate::ast::{self, Component, Handler, Payload, Reply};
use crate::attr;
use crate::ctxt::Ctxt;
use crate::valid;

/// Expands `#[component(args)] input`.
///
/// On error the output is the input item (without its `#[handler]` attributes), the
/// `compile_error!`s and, when the impl block names a usable type, a stub `Component` impl with
/// an empty route table, so the rest of the user's crate still type-checks.
pub fn component(args: TokenStream, input: TokenStream) -> TokenStream {
    let item: Item = match syn::parse2(input.clone()) {
        Ok(item) => item,
        Err(err) => {
            let err = err.to_compile_error();
            return quote!(#input #err);
        }
    };

    let cx = Ctxt::new();
    let attrs = attr::parse_component(&cx, args);
    let component = ast::Component::from_item(&cx, &item, attrs);
    if let Some(component) = &component {
        valid::check(&cx, component);
    }

    let mut output = item.clone();
    if let Item::Impl(imp) = &mut output {
        ast::strip_handler_attrs(imp);
    }
    let mut tokens = output.into_token_stream();

    match (cx.check(), &component) {
        (Ok(()), Some(component)) => generate(component).to_tokens(&mut tokens),
        (Err(err), component) => {
            err.to_compile_error().to_tokens(&mut tokens);
            if let Some(component) = component {
                stub(component).to_tokens(&mut tokens);
            }
        }
        (Ok(()), None) => unreachable!("from_item reports why it returns None"),
    }
    tokens
}

/// `<root>::__private`.
fn private_path(component: &Component) -> TokenStream {
    match &component.attrs.krate {
        Some((_, path)) => quote!(#path::__private),
        None => quote!(::nano::__private),
    }
}

/// A type as the user wrote it, for the route table (`Vec<u8>`, `proto::Join`): its tokens
/// without the spaces the token printer puts between them (`dyn Trait` keeps its space).
fn type_name(ty: &syn::Type) -> String {
    let printed = quote!(#ty).to_string();
    let mut out = String::with_capacity(printed.len());
    let mut prev_word = false;
    for token in printed.split(' ') {
        let word = token.starts_with(|c: char| c.is_alphanumeric() || c == '_');
        if prev_word && word {
            out.push(' ');
        }
        out.push_str(token);
        prev_word = token.ends_with(|c: char| c.is_alphanumeric() || c == '_');
    }
    out
}

/// The generated `impl Component`.
pub fn generate(component: &Component) -> TokenStream {
    let private = &private_path(component);
    let self_ty = &component.original.self_ty;
    let name = component.name.as_deref().unwrap_or_default();

    let (serializer, ser_span) = serializer(component, private);
    let session_checks = session_checks(component, private);

    let infos = component.handlers.iter().map(|h| {
        let handler_name = &h.name;
        let route = component.route(h);
        let payload = h.payload();
        let has_payload = payload.is_some();
        let raw_payload = matches!(payload, Some(Payload::Raw(_)));
        let is_async = h.is_async();
        let takes_context = h.context().is_some();
        let deferred = h.takes_responder();
        let internal = h.attrs.internal.is_some() || component.attrs.internal.is_some();
        let payload_type = payload.map(|p| type_name(p.ty())).unwrap_or_default();
        let response_type = match h.reply().or_else(|| h.responder()) {
            Some(Reply::Unit) => "()".to_owned(),
            Some(Reply::Raw(ty) | Reply::Typed(ty)) => type_name(ty),
            None => String::new(),
        };
        let raw_response = matches!(h.reply().or_else(|| h.responder()), Some(Reply::Raw(_)));
        quote! {
            #private::HandlerInfo {
                name: #handler_name,
                route: #route,
                has_payload: #has_payload,
                raw_payload: #raw_payload,
                is_async: #is_async,
                takes_context: #takes_context,
                deferred: #deferred,
                internal: #internal,
                payload_type: #payload_type,
                response_type: #response_type,
                raw_response: #raw_response,
            }
        }
    });

    let decode_arms = component.handlers.iter().enumerate().map(|(index, h)| {
        let decode = match h.payload() {
            None => quote!(#private::decode_none(payload)),
            Some(Payload::Raw(ty)) => {
                quote_spanned!(ty.span()=> #private::decode_raw::<#ty>(payload))
            }
            Some(Payload::Typed(ty)) => {
                let func = quote_spanned! {ty.span()=>
                    #private::decode_typed::<<Self as #private::Component>::Serializer, #ty>
                };
                quote!(#func(payload))
            }
        };
        let index = Literal::usize_unsuffixed(index);
        quote!(#index => #decode,)
    });

    let call_arms = component
        .handlers
        .iter()
        .enumerate()
        .map(|(index, h)| call_arm(private, index, h));

    let call_fn = call_fn(
        private,
        ser_span,
        quote! {
            #session_checks
            match index {
                #(#call_arms)*
                _ => {
                    #private::reply_error(
                        reply,
                        #private::bad_index(<Self as #private::Component>::NAME, index),
                    );
                    #private::Call::Done
                }
            }
        },
    );

    let hooks = component.hooks.iter().map(|hook| {
        let method = &hook.original.sig.ident;
        let trait_method = syn::Ident::new(hook.kind.name(), Span::call_site());
        // A context of the wrong type (`&Context<Other>`) is reported on the user's parameter.
        let ctx = match hook.original.sig.inputs.iter().nth(1) {
            Some(syn::FnArg::Typed(arg)) => {
                let span = match &*arg.ty {
                    syn::Type::Reference(r) => r.elem.span(),
                    other => other.span(),
                };
                quote_spanned!(span=> ctx)
            }
            _ => quote!(ctx),
        };
        quote! {
            fn #trait_method(&mut self, ctx: &#private::Context<Self>) {
                Self::#method(self, #ctx)
            }
        }
    });

    let (pushes, schemas) = api(component, private);

    quote! {
        impl #private::Component for #self_ty {
            type Serializer = #serializer;
            const NAME: &'static str = #name;
            const HANDLERS: &'static [#private::HandlerInfo] = &[#(#infos,)*];
            #pushes
            #schemas

            fn decode(
                index: usize,
                payload: #private::__Bytes,
            ) -> ::core::result::Result<#private::BoxedPayload, #private::Error> {
                #[allow(unreachable_patterns)]
                match index {
                    #(#decode_arms)*
                    _ => ::core::result::Result::Err(#private::bad_index(
                        <Self as #private::Component>::NAME,
                        index,
                    )),
                }
            }

            #call_fn

            #(#hooks)*
        }
    }
}

/// `const PUSHES` and `fn schemas`: the declared pushes, and the schema of every payload type
/// that has one (chosen per type at compile time, see `nano_core::api::SchemaOf`).
fn api(component: &Component, private: &TokenStream) -> (TokenStream, TokenStream) {
    let pushes = component.attrs.pushes.iter().map(|(route, ty)| {
        let payload_type = type_name(ty);
        quote! {
            #private::PushInfo { route: #route, payload_type: #payload_type }
        }
    });
    let probe = |ty: &syn::Type| {
        quote! {
            #private::TypeInfo {
                schema: (&&#private::SchemaOf::<#ty>::new()).schema(gen),
                message: (&&#private::MessageOf::<#ty>::new()).message(),
            }
        }
    };
    let none = quote!(<#private::TypeInfo as ::core::default::Default>::default());
    let requests = component.handlers.iter().map(|h| match h.payload() {
        Some(Payload::Typed(ty)) => probe(ty),
        _ => none.clone(),
    });
    let responses = component
        .handlers
        .iter()
        .map(|h| match h.reply().or_else(|| h.responder()) {
            Some(Reply::Typed(ty)) => probe(ty),
            _ => none.clone(),
        });
    let push_schemas = component.attrs.pushes.iter().map(|(_, ty)| probe(ty));
    let consts = quote! {
        const PUSHES: &'static [#private::PushInfo] = &[#(#pushes,)*];
    };
    let schemas = quote! {
        #[allow(unused_imports, unused_variables)]
        fn schemas(gen: &mut #private::SchemaGenerator) -> #private::ComponentSchemas {
            use #private::{HasMessage as _, HasSchema as _, NoMessage as _, NoSchema as _};
            #private::ComponentSchemas {
                requests: ::std::vec![#(#requests,)*],
                responses: ::std::vec![#(#responses,)*],
                pushes: ::std::vec![#(#push_schemas,)*],
            }
        }
    };
    (consts, schemas)
}

/// `type Serializer = ...`: the override, else the first handler's session type's serializer,
/// else JSON; and the span to give every use of `Self::Serializer`. When the serializer comes
/// from a session type, that is the span of the session type: if it is not a `Session`, every
/// resulting error lands (and is deduplicated) on it instead of on the attribute.
fn serializer(component: &Component, private: &TokenStream) -> (TokenStream, Span) {
    if let Some((_, path)) = &component.attrs.serializer {
        return (path.to_token_stream(), Span::call_site());
    }
    match component.handlers.iter().find_map(Handler::session) {
        Some(session) => {
            let span = session.span();
            let ty = quote_spanned!(span=> <#session as #private::SessionType>::Serializer);
            (ty, span)
        }
        None => (quote!(#private::Json), Span::call_site()),
    }
}

/// `fn call(...) { body }`, spanned (all but the body's contents) where a failure to resolve
/// `Self::Serializer` should be reported, see [`serializer`]: rustc reports it for the whole
/// item and for each parameter type.
fn call_fn(private: &TokenStream, span: Span, body: TokenStream) -> TokenStream {
    let private = respan(private.clone(), span);
    quote_spanned! {span=>
        #[allow(unused_variables)]
        fn call<'a>(
            &'a mut self,
            index: usize,
            session: &'a #private::Session<<Self as #private::Component>::Serializer>,
            payload: #private::BoxedPayload,
            ctx: ::core::option::Option<&'a #private::Context<Self>>,
            reply: #private::ReplyTo<'a, <Self as #private::Component>::Serializer>,
        ) -> #private::Call<'a> {
            #body
        }
    }
}

/// Gives every token of `tokens` the span `span` (a type path starting with call-site tokens
/// would otherwise be reported at the attribute).
fn respan(tokens: TokenStream, span: Span) -> TokenStream {
    tokens
        .into_iter()
        .map(|mut tt| {
            if let TokenTree::Group(g) = &tt {
                let mut group = Group::new(g.delimiter(), respan(g.stream(), span));
                group.set_span(span);
                tt = TokenTree::Group(group);
            } else {
                tt.set_span(span);
            }
            tt
        })
        .collect()
}

/// Every handler's session type must be `Session<Self::Serializer>` (the first handler's is by
/// construction, unless the serializer was given explicitly). Spanned on the session type.
fn session_checks(component: &Component, private: &TokenStream) -> TokenStream {
    let skip = usize::from(component.attrs.serializer.is_none());
    component
        .handlers
        .iter()
        .filter_map(Handler::session)
        .skip(skip)
        .map(|session| {
            let check = quote_spanned! {session.span()=>
                #private::same_session::<
                    #session,
                    #private::Session<<Self as #private::Component>::Serializer>,
                >
            };
            quote!(let _: fn() = #check;)
        })
        .collect()
}

fn call_arm(private: &TokenStream, index: usize, h: &Handler) -> TokenStream {
    let index = Literal::usize_unsuffixed(index);
    let method = &h.original.sig.ident;
    let take = h.payload().map(|payload| {
        let ty = payload.ty();
        quote! {
            let payload = match #private::take::<#ty>(payload) {
                ::core::result::Result::Ok(payload) => payload,
                ::core::result::Result::Err(err) => {
                    #private::reply_error(reply, err);
                    return #private::Call::Done;
                }
            };
        }
    });
    // A session of the wrong serializer is reported by `session_checks`; spanning the argument
    // on the handler's session type keeps the resulting type mismatch on the user's code too.
    let session = match h.session() {
        Some(ty) => quote_spanned!(ty.span()=> session),
        None => quote!(session),
    };
    // The context, when taken: always given by the engine for such a handler. A context of the
    // wrong type (`&Context<Other>`) is reported on the user's type.
    let ctx = h.context().map(|_| {
        quote! {
            let ctx = match ctx {
                ::core::option::Option::Some(ctx) => ctx,
                ::core::option::Option::None => {
                    #private::reply_error(reply, #private::Error::internal("handler context missing"));
                    return #private::Call::Done;
                }
            };
        }
    });
    // A deferred handler answers through its `Responder`, encoded like a returned value.
    let responder = h.responder().map(|r| {
        let (func, span) = match r {
            Reply::Unit => (quote!(defer_unit), h.original.sig.ident.span()),
            Reply::Raw(ty) => (quote!(defer_raw), ty.span()),
            Reply::Typed(ty) => (quote!(defer_typed), ty.span()),
        };
        let private = respan(private.clone(), span);
        quote_spanned!(span=> let responder = #private::#func(reply);)
    });
    let args = h.args.iter().enumerate().map(|(i, a)| {
        if i == 0 {
            return session.clone();
        }
        match ast::Arg::classify(&a.ty) {
            ast::Arg::Context(ty) => {
                let span = match ast::peel(ty) {
                    syn::Type::Reference(r) => r.elem.span(),
                    other => other.span(),
                };
                quote_spanned!(span=> ctx)
            }
            ast::Arg::Responder(..) => quote!(responder),
            ast::Arg::Payload(_) => quote!(payload),
        }
    });
    let args = quote!(self, #(#args),*);
    let prelude = quote!(#take #ctx #responder);
    if h.takes_responder() {
        // Returns `()`; the answer goes through the responder.
        if h.is_async() {
            let private = respan(private.clone(), method.span());
            let pending = quote_spanned! {method.span()=>
                #private::Call::Pending(::std::boxed::Box::pin(async move {
                    Self::#method(#args).await
                }))
            };
            return quote! {
                #index => {
                    #prelude
                    #pending
                }
            };
        }
        return quote! {
            #index => {
                #prelude
                Self::#method(#args);
                #private::Call::Done
            }
        };
    }
    // Spanned on the response type, so that an unsatisfied `Encode<S>` (or `E: Into<Error>`)
    // bound is reported there: rustc points at the argument that fixed the type parameter.
    let reply_span = match h.reply().expect("validated return type") {
        Reply::Unit => h.original.sig.output.span(),
        Reply::Raw(ty) | Reply::Typed(ty) => ty.span(),
    };
    let reply_fn = match h.reply().expect("validated return type") {
        Reply::Unit => quote_spanned!(reply_span=> #private::reply_unit),
        Reply::Raw(_) => quote_spanned!(reply_span=> #private::reply_raw),
        Reply::Typed(_) => quote_spanned!(reply_span=> #private::reply_typed),
    };
    let send = quote_spanned!(reply_span=> #reply_fn(reply, result););
    if h.is_async() {
        // Spanned on the method name: a handler future that is not `Send` is reported there.
        let body = quote! {
            let result = Self::#method(#args).await;
            #send
        };
        let private = respan(private.clone(), method.span());
        let pending = quote_spanned! {method.span()=>
            #private::Call::Pending(::std::boxed::Box::pin(async move { #body }))
        };
        quote! {
            #index => {
                #prelude
                #pending
            }
        }
    } else {
        quote! {
            #index => {
                #prelude
                let result = Self::#method(#args);
                #send
                #private::Call::Done
            }
        }
    }
}

/// The `impl Component` emitted next to the errors: right name and serializer, no routes.
fn stub(component: &Component) -> TokenStream {
    if !component.original.generics.params.is_empty() {
        return TokenStream::new();
    }
    let private = &private_path(component);
    let self_ty = &component.original.self_ty;
    let name = LitStr::new(
        component.name.as_deref().unwrap_or_default(),
        Span::call_site(),
    );
    let (serializer, ser_span) = serializer(component, private);
    let call_fn = call_fn(
        private,
        ser_span,
        quote! {
            #private::reply_error(
                reply,
                #private::bad_index(<Self as #private::Component>::NAME, index),
            );
            #private::Call::Done
        },
    );
    quote! {
        impl #private::Component for #self_ty {
            type Serializer = #serializer;
            const NAME: &'static str = #name;
            const HANDLERS: &'static [#private::HandlerInfo] = &[];

            fn decode(
                index: usize,
                _payload: #private::__Bytes,
            ) -> ::core::result::Result<#private::BoxedPayload, #private::Error> {
                ::core::result::Result::Err(#private::bad_index(
                    <Self as #private::Component>::NAME,
                    index,
                ))
            }

            #call_fn
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expand(args: TokenStream, input: TokenStream) -> String {
        component(args, input).to_string()
    }

    #[test]
    fn routes_and_dispatch() {
        let out = expand(
            quote!(),
            quote! {
                impl Room {
                    #[handler(name = "Enter")]
                    pub fn join(&mut self, s: &Session, req: JoinRequest) -> Result<JoinResponse> { todo!() }
                    pub fn upload(&self, s: &Session, data: Bytes) -> Result<Vec<u8>> { todo!() }
                    pub fn ping(&self, s: &Session) -> Result<()> { todo!() }
                    pub async fn load(&mut self, s: &Session, id: u64) -> Result<()> { todo!() }
                    fn init(&mut self, ctx: &Context<Self>) {}
                }
            },
        );
        // The impl block is re-emitted without `#[handler]`.
        assert!(!out.contains("# [handler"), "{out}");
        for expected in [
            "impl :: nano :: __private :: Component for Room",
            "type Serializer = < Session as :: nano :: __private :: SessionType > :: Serializer",
            "const NAME : & 'static str = \"Room\"",
            "name : \"Enter\" , route : \"Room.Enter\" , has_payload : true , raw_payload : false , is_async : false",
            "route : \"Room.Upload\" , has_payload : true , raw_payload : true",
            "route : \"Room.Ping\" , has_payload : false",
            "route : \"Room.Load\" , has_payload : true , raw_payload : false , is_async : true",
            "0 => :: nano :: __private :: decode_typed :: << Self as :: nano :: __private :: Component > :: Serializer , JoinRequest > (payload)",
            "1 => :: nano :: __private :: decode_raw :: < Bytes > (payload)",
            "2 => :: nano :: __private :: decode_none (payload)",
            "let result = Self :: join (self , session , payload) ; :: nano :: __private :: reply_typed (reply , result)",
            ":: nano :: __private :: reply_raw (reply , result)",
            "let result = Self :: ping (self , session) ; :: nano :: __private :: reply_unit (reply , result)",
            ":: nano :: __private :: Call :: Pending (:: std :: boxed :: Box :: pin (async move { let result = Self :: load (self , session , payload) . await ;",
            "fn init (& mut self , ctx : & :: nano :: __private :: Context < Self >) { Self :: init (self , ctx) }",
            // Handlers after the first are checked against the first one's serializer.
            "let _ : fn () = :: nano :: __private :: same_session :: < Session , :: nano :: __private :: Session << Self as :: nano :: __private :: Component > :: Serializer > , >",
        ] {
            assert!(out.contains(expected), "missing `{expected}` in\n{out}");
        }
        assert_eq!(out.matches("same_session").count(), 3, "{out}");
        assert!(!out.contains("fn after_init"), "{out}");
    }

    #[test]
    fn options() {
        let out = expand(
            quote!(
                name = "room",
                rename_all = "lowercase",
                serializer = Protobuf,
                crate = ::nano_core
            ),
            quote! {
                impl Room {
                    pub fn join_room(&mut self, s: &Session<Protobuf>) -> Result<()> { todo!() }
                }
            },
        );
        for expected in [
            "impl :: nano_core :: __private :: Component for Room",
            "type Serializer = Protobuf ;",
            "\"room\"",
            "route : \"room.joinroom\"",
            // With an explicit serializer every handler is checked, the first one too.
            "same_session :: < Session < Protobuf > ,",
        ] {
            assert!(out.contains(expected), "missing `{expected}` in\n{out}");
        }
    }

    #[test]
    fn no_handlers_is_json() {
        let out = expand(quote!(), quote!(impl Clock {}));
        assert!(
            out.contains("type Serializer = :: nano :: __private :: Json"),
            "{out}"
        );
        assert!(
            out.contains("HANDLERS : & 'static [:: nano :: __private :: HandlerInfo] = & [] ;"),
            "{out}"
        );
    }

    #[test]
    fn errors_keep_the_impl_and_add_a_stub() {
        let out = expand(
            quote!(),
            quote! {
                impl Room {
                    #[handler(name = "X")]
                    pub fn join(self, s: &Session<Protobuf>) -> Result<()> { todo!() }
                }
            },
        );
        assert!(
            out.contains("impl Room { pub fn join (self , s : & Session < Protobuf >)"),
            "{out}"
        );
        assert!(!out.contains("# [handler"), "{out}");
        assert!(
            out.contains("compile_error ! { \"handler receiver must be `&self` or `&mut self`\" }"),
            "{out}"
        );
        assert!(
            out.contains("impl :: nano :: __private :: Component for Room"),
            "{out}"
        );
        assert!(out.contains("type Serializer = < Session < Protobuf > as :: nano :: __private :: SessionType > :: Serializer"), "{out}");
        assert!(
            out.contains("HANDLERS : & 'static [:: nano :: __private :: HandlerInfo] = & [] ;"),
            "{out}"
        );
    }

    #[test]
    fn non_impl_items_are_kept_verbatim() {
        let out = expand(
            quote!(name = 1),
            quote!(
                struct Room;
            ),
        );
        assert!(out.starts_with("struct Room ;"), "{out}");
        assert_eq!(out.matches("compile_error").count(), 2, "{out}");
        assert!(!out.contains("Component"), "{out}");
    }

    #[test]
    fn generic_impls_get_no_stub() {
        let out = expand(
            quote!(),
            quote!(
                impl<T> Room<T> {}
            ),
        );
        assert!(
            out.contains("does not support generic impl blocks"),
            "{out}"
        );
        assert!(!out.contains("Component"), "{out}");
    }
}
