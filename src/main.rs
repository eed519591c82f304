//! The `streamgate` binary: everything lives in the library; see `streamgate --help`.
#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    streamgate::cli::main()
}
