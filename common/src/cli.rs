//! Command-line parsing with the error shape every program of the demo shares: bad
//! configuration prints ONE line naming the flag and its env var, and exits with code 2.

use clap::Parser;
use clap::error::{ContextKind, ContextValue, ErrorKind};
use std::error::Error as _;

/// Exit code for invalid configuration, as clap and most Unix tools use for usage errors.
pub const EXIT_CONFIG: i32 = 2;

/// Parses the process's arguments and environment into `T`, or exits: `--help`/`--version`
/// print and exit 0; anything invalid prints one line and exits 2.
pub fn parse_or_exit<T: Parser>() -> T {
    match try_parse_from(std::env::args_os()) {
        Ok(config) => config,
        Err(ParseOutcome::Display(text)) => {
            print!("{text}");
            std::process::exit(0);
        }
        Err(ParseOutcome::Invalid(line)) => config_error_exit(&line),
    }
}

/// Prints `<program>: <message>` on stderr and exits with [`EXIT_CONFIG`].
pub fn config_error_exit(message: &str) -> ! {
    eprintln!("{}: {message}", program_name());
    std::process::exit(EXIT_CONFIG);
}

/// The outcome of a parse that did not produce a configuration.
#[derive(Debug, PartialEq, Eq)]
pub enum ParseOutcome {
    /// Help or version text, for stdout.
    Display(String),
    /// A one-line description of invalid configuration.
    Invalid(String),
}

/// Parses `args` (and the environment) into `T`. Exposed so tests can check the error line.
pub fn try_parse_from<T, I, A>(args: I) -> Result<T, ParseOutcome>
where
    T: Parser,
    I: IntoIterator<Item = A>,
    A: Into<std::ffi::OsString> + Clone,
{
    let mut command = T::command();
    let result = command
        .try_get_matches_from_mut(args)
        .and_then(|mut matches| T::from_arg_matches_mut(&mut matches));
    result.map_err(|error| match error.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
            ParseOutcome::Display(error.render().to_string())
        }
        _ => ParseOutcome::Invalid(one_line(&command, &error)),
    })
}

/// Describes a clap error in one line, naming the flag together with its env-var twin.
fn one_line(command: &clap::Command, error: &clap::Error) -> String {
    let flag = match error.get(ContextKind::InvalidArg) {
        Some(ContextValue::String(arg)) => Some(describe_arg(command, arg)),
        _ => None,
    };
    let value = match error.get(ContextKind::InvalidValue) {
        Some(ContextValue::String(value)) => Some(value.clone()),
        _ => None,
    };
    match (error.kind(), flag, value) {
        (ErrorKind::InvalidValue | ErrorKind::ValueValidation, Some(flag), Some(value)) => {
            let reason = error
                .source()
                .map(|source| format!(": {source}"))
                .unwrap_or_default();
            let choices = match error.get(ContextKind::ValidValue) {
                Some(ContextValue::Strings(values)) => {
                    format!(" (possible values: {})", values.join(", "))
                }
                _ => String::new(),
            };
            format!("invalid value '{value}' for {flag}{reason}{choices}")
        }
        (ErrorKind::MissingRequiredArgument, _, _) => {
            let missing = match error.get(ContextKind::InvalidArg) {
                Some(ContextValue::Strings(args)) => args
                    .iter()
                    .map(|arg| describe_arg(command, arg))
                    .collect::<Vec<_>>()
                    .join(", "),
                _ => "an argument".to_owned(),
            };
            format!("missing required {missing}")
        }
        (_, Some(flag), _) => format!("{} ({flag})", first_line(error)),
        _ => first_line(error),
    }
}

fn first_line(error: &clap::Error) -> String {
    let rendered = error.render().to_string();
    let line = rendered.lines().next().unwrap_or("invalid arguments");
    line.trim_start_matches("error: ").to_owned()
}

/// `--port <PORT>` becomes `--port (env PORT)`.
fn describe_arg(command: &clap::Command, rendered: &str) -> String {
    let flag = rendered.split_whitespace().next().unwrap_or(rendered);
    let env = command
        .get_arguments()
        .find(|arg| {
            arg.get_long()
                .is_some_and(|long| flag.trim_start_matches("--") == long)
        })
        .and_then(|arg| arg.get_env())
        .map(|env| env.to_string_lossy().into_owned());
    match env {
        Some(env) => format!("{flag} (env {env})"),
        None => flag.to_owned(),
    }
}

fn program_name() -> String {
    std::env::args_os()
        .next()
        .as_deref()
        .map(std::path::Path::new)
        .and_then(|path| path.file_name())
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_else(|| "program".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Parser)]
    struct Example {
        /// Port to listen on.
        #[arg(long, env = "EXAMPLE_TEST_PORT", default_value_t = 8080)]
        port: u16,
        #[arg(long, env = "EXAMPLE_TEST_WAIT", value_parser = crate::parse_positive_duration)]
        wait: Option<std::time::Duration>,
    }

    #[test]
    fn invalid_value_names_flag_and_env_on_one_line() {
        let outcome = try_parse_from::<Example, _, _>(["example", "--port", "http"]).unwrap_err();
        let ParseOutcome::Invalid(line) = outcome else {
            panic!("expected an error, got {outcome:?}")
        };
        assert!(!line.contains('\n'), "{line}");
        assert!(line.contains("--port (env EXAMPLE_TEST_PORT)"), "{line}");
        assert!(line.contains("'http'"), "{line}");
    }

    #[test]
    fn custom_parser_reason_is_kept() {
        let outcome =
            try_parse_from::<Example, _, _>(["example", "--wait", "3 weeks"]).unwrap_err();
        let ParseOutcome::Invalid(line) = outcome else {
            panic!("expected an error, got {outcome:?}")
        };
        assert!(line.contains("--wait (env EXAMPLE_TEST_WAIT)"), "{line}");
        assert!(line.contains("unknown unit"), "{line}");
    }

    #[test]
    fn unknown_flag_is_one_line() {
        let outcome = try_parse_from::<Example, _, _>(["example", "--nope"]).unwrap_err();
        let ParseOutcome::Invalid(line) = outcome else {
            panic!("expected an error, got {outcome:?}")
        };
        assert!(!line.contains('\n') && line.contains("--nope"), "{line}");
    }

    #[test]
    fn help_is_displayed_not_an_error() {
        let outcome = try_parse_from::<Example, _, _>(["example", "--help"]).unwrap_err();
        assert!(
            matches!(outcome, ParseOutcome::Display(text) if text.contains("EXAMPLE_TEST_PORT"))
        );
    }
}
