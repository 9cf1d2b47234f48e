//! What the fuzz targets share: a reader that hands out its bytes in pieces, and how the pieces
//! are chosen.
//!
//! The proxy's byte-level guards (protocol detection, the request-framing guard) read from a
//! socket, where one message may arrive in any number of reads. A bug that only shows when a
//! line end, a header name or the HTTP/2 preface is split across two reads is the kind a test
//! with whole messages never finds, so every target runs its input twice: in one piece, and cut
//! where the input's first byte says; the guard must reach the same verdict both ways.
#![forbid(unsafe_code)]

use std::cell::Cell;
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, ReadBuf};

/// Splits `input` into its first byte, which chooses where the rest is cut, and the rest.
pub fn seed_and_data(input: &[u8]) -> Option<(u8, &[u8])> {
    input.split_first().map(|(&seed, data)| (seed, data))
}

/// Lengths of the pieces `len` bytes are cut into, chosen by `seed`: from one byte at a time
/// (seed 0) to pieces of up to 64 bytes, cut at pseudo-random places (xorshift), never empty.
pub fn pieces(seed: u8, len: usize) -> Vec<usize> {
    let largest = usize::from(seed % 64) + 1;
    let mut state = u32::from(seed) | 0x9e37_0000;
    let mut out = Vec::new();
    let mut left = len;
    while left > 0 {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        let n = (state as usize % largest + 1).min(left);
        out.push(n);
        left -= n;
    }
    out
}

/// An in-memory stream that returns `data` in the given pieces, one per read (a read with room
/// for less gets the start of the piece and the rest next time), then end of file. It never
/// waits, so a poll always completes.
pub struct Pieces<'a> {
    data: &'a [u8],
    lengths: Vec<usize>,
    next: usize,
    /// Bytes handed out so far, shared with whoever wants to know after the reader is moved.
    consumed: Rc<Cell<usize>>,
}

impl<'a> Pieces<'a> {
    pub fn new(data: &'a [u8], lengths: Vec<usize>) -> Self {
        assert_eq!(lengths.iter().sum::<usize>(), data.len());
        Pieces {
            data,
            lengths,
            next: 0,
            consumed: Rc::default(),
        }
    }

    /// How many bytes have been read so far, readable after the reader is moved away.
    pub fn consumed(&self) -> Rc<Cell<usize>> {
        self.consumed.clone()
    }
}

impl AsyncRead for Pieces<'_> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let Some(piece) = this.lengths.get_mut(this.next) else {
            return Poll::Ready(Ok(()));
        };
        let n = (*piece).min(buf.remaining());
        let at = this.consumed.get();
        buf.put_slice(&this.data[at..at + n]);
        this.consumed.set(at + n);
        *piece -= n;
        if *piece == 0 {
            this.next += 1;
        }
        Poll::Ready(Ok(()))
    }
}
