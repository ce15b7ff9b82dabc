fn main() {
    // Passes ESP-IDF's linker arguments and cfgs (from esp-idf-sys) to this crate.
    embuild::espidf::sysenv::output();
}
