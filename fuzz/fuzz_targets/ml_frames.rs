//! What an ML worker sends the bridge (`unhidra_ml_bridge::framing`): length-prefixed JSON
//! answers, arriving in pieces.
//!
//! First byte: the frame limit (16 B to 4 KiB); second: the size of the pieces. The reading
//! must not depend on how the bytes were split: in one piece and in many, the same answers
//! and the same verdict.

#![no_main]

use libfuzzer_sys::fuzz_target;
use unhidra_ml_bridge::framing::read_answers;

fuzz_target!(|data: &[u8]| {
    let [limit, piece, bytes @ ..] = data else {
        return;
    };
    let max = 16 + usize::from(*limit) * 16;
    let piece = usize::from(*piece).max(1);
    let whole = read_answers(max, [bytes]);
    let pieces = read_answers(max, bytes.chunks(piece));
    assert_eq!(whole, pieces, "split into {piece}-byte pieces");
});
