//! Which outside tools the tests can use here (see `unhidra-test-gates`).
fn main() {
    unhidra_test_gates::emit(&["unhidra_root", "unhidra_ml"]);
}
