//! The body of a request sent upstream. It is the gateway's last sight of a request
//! before its bytes leave: hyper polls it on the upstream connection's task once the
//! connection is ready and the head is queued, and writes what it yields to the socket
//! in the same poll. That is when the crash journal records the request as forwarded
//! (see `journal::Journal::forwarding`), so a kill while the request still waits for a
//! connection charges nothing for a request no upstream received.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Frame, SizeHint};

use super::journal::SendMark;

/// One attempt's request body: the bytes, once, with their exact length (sent as
/// `Content-Length`, as a plain byte body would be).
pub struct OutgoingBody {
    bytes: Option<Bytes>,
    mark: Option<(SendMark, i64)>,
}

impl OutgoingBody {
    /// `bytes` for the upstream `upstream_id`; `mark` is the request's journal mark (none
    /// when the journal is off).
    pub fn new(bytes: Bytes, mark: Option<SendMark>, upstream_id: i64) -> OutgoingBody {
        OutgoingBody { bytes: Some(bytes), mark: mark.map(|m| (m, upstream_id)) }
    }
}

impl http_body::Body for OutgoingBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = self.get_mut();
        if let Some((mark, upstream_id)) = this.mark.take() {
            mark.sent(upstream_id);
        }
        Poll::Ready(this.bytes.take().map(|bytes| Ok(Frame::data(bytes))))
    }

    fn is_end_stream(&self) -> bool {
        self.bytes.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.bytes.as_ref().map_or(0, |b| b.len() as u64))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body::Body as _;

    #[test]
    fn it_yields_its_bytes_once_with_their_exact_length() {
        let mut body = OutgoingBody::new(Bytes::from_static(b"{\"model\":\"gpt-5\"}"), None, 1);
        assert_eq!(body.size_hint().exact(), Some(17));
        assert!(!body.is_end_stream());
        let waker = futures::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        let Poll::Ready(Some(Ok(frame))) = Pin::new(&mut body).poll_frame(&mut cx) else { panic!("no frame") };
        assert_eq!(frame.into_data().unwrap(), Bytes::from_static(b"{\"model\":\"gpt-5\"}"));
        assert!(body.is_end_stream());
        assert!(matches!(Pin::new(&mut body).poll_frame(&mut cx), Poll::Ready(None)));
    }
}
