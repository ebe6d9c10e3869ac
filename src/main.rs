fn main() -> std::process::ExitCode {
    siyu::cli::main()
}
