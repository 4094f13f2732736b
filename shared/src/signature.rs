//! Callback authentication: the docs.kie.ai HMAC scheme and a shared token.
