//! How an admin page answers a write, written once: the change itself goes through
//! [`crate::domain::audit::AuditedTx`] (or an audited domain call); this says what the admin
//! sees next — back to the list when done, the form again with its errors when the
//! input was refused, a readable error page for the rest.

use axum::response::{IntoResponse, Redirect, Response};

use super::{error_page_for, Ctx, FieldErrors};
use crate::foundation::error::{Error, Result};

/// The answer to a write without a form of its own (switch on/off, delete).
pub fn back_or_error_page(ctx: &Ctx, result: Result<()>, back_to: &str) -> Response {
    match result {
        Ok(()) => Redirect::to(back_to).into_response(),
        Err(e) => error_page_for(ctx, &e),
    }
}

/// The answer to an admin form's write.
pub struct FormWrite<'a> {
    ctx: &'a Ctx,
    back_to: &'a str,
    editing: bool,
    errors: fn(&Ctx, &Error) -> FieldErrors,
}

impl<'a> FormWrite<'a> {
    /// A form that creates: every refusal of the input shows the form again.
    pub fn new(ctx: &'a Ctx, back_to: &'a str) -> FormWrite<'a> {
        FormWrite { ctx, back_to, editing: false, errors: FieldErrors::from_error }
    }

    /// A form that edits one object: that object's absence is a 404 page, not a form error.
    pub fn editing(self) -> FormWrite<'a> {
        FormWrite { editing: true, ..self }
    }

    /// Places refusals on fields in a page's own way (a taken code on the code field).
    pub fn errors_by(self, errors: fn(&Ctx, &Error) -> FieldErrors) -> FormWrite<'a> {
        FormWrite { errors, ..self }
    }

    /// `Ok` goes back; a refusal renders the form again through `again`; the rest is an error page.
    pub async fn answer(self, result: Result<()>, again: impl AsyncFnOnce(FieldErrors) -> Response) -> Response {
        match result {
            Ok(()) => Redirect::to(self.back_to).into_response(),
            Err(e) if self.shows_form(&e) => again((self.errors)(self.ctx, &e)).await,
            Err(e) => error_page_for(self.ctx, &e),
        }
    }

    fn shows_form(&self, err: &Error) -> bool {
        err.status_code().is_client_error() && !(self.editing && matches!(err, Error::NotFound(_)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_edit_form_leaves_a_missing_object_to_the_error_page() {
        let ctx = Ctx::bare(super::super::i18n::Lang::En);
        let create = FormWrite::new(&ctx, "/admin/x");
        assert!(create.shows_form(&Error::NotFound("coupon")));
        assert!(create.shows_form(&Error::validation("code", "is required")));
        let edit = FormWrite::new(&ctx, "/admin/x").editing();
        assert!(!edit.shows_form(&Error::NotFound("coupon")));
        assert!(edit.shows_form(&Error::conflict("code_taken", "taken")));
        assert!(!edit.shows_form(&Error::Internal(anyhow::anyhow!("db down"))));
    }
}
