//! Subcommands, their flags, exit codes.

pub fn main() -> i32 {
    0
}

pub fn main_with_default_fixture() -> i32 {
    main()
}
