//! Just enough of the POSIX shell's word rules to take extra QEMU arguments from one environment
//! variable and to print a command line that a user can paste into a shell.

use super::VmError;

/// Splits `text` into words as a shell would, without expansions: words are separated by
/// whitespace; single quotes keep everything up to the next single quote; double quotes keep
/// everything up to the next unescaped double quote, where a backslash escapes `"`, `\`, `$` and
/// `` ` ``; outside quotes a backslash keeps the next character.
pub fn split_args(text: &str) -> Result<Vec<String>, VmError> {
    let bad = |problem| VmError::BadExtraArgs { value: text.to_owned(), problem };
    let mut words = Vec::new();
    // The word being read; `None` between words, so that `''` makes an empty word.
    let mut word: Option<String> = None;
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => words.extend(word.take()),
            '\'' => {
                let word = word.get_or_insert_with(String::new);
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => word.push(c),
                        None => return Err(bad("a single quote is not closed")),
                    }
                }
            }
            '"' => {
                let word = word.get_or_insert_with(String::new);
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c @ ('"' | '\\' | '$' | '`')) => word.push(c),
                            Some(c) => {
                                word.push('\\');
                                word.push(c);
                            }
                            None => return Err(bad("a double quote is not closed")),
                        },
                        Some(c) => word.push(c),
                        None => return Err(bad("a double quote is not closed")),
                    }
                }
            }
            '\\' => match chars.next() {
                Some(c) => word.get_or_insert_with(String::new).push(c),
                None => return Err(bad("it ends with a backslash")),
            },
            c => word.get_or_insert_with(String::new).push(c),
        }
    }
    words.extend(word);
    Ok(words)
}

/// Quotes `word` for a POSIX shell: unchanged when it has only characters that no shell treats
/// specially, otherwise in single quotes, with each `'` written as `'\''`.
pub fn quote(word: &str) -> String {
    let plain = |byte: u8| byte.is_ascii_alphanumeric() || b"_-+=/.,:@%".contains(&byte);
    if !word.is_empty() && word.bytes().all(plain) {
        return word.to_owned();
    }
    format!("'{}'", word.replace('\'', r"'\''"))
}

/// `argv` as one line of shell words.
pub fn command_line(argv: &[String]) -> String {
    argv.iter().map(|word| quote(word)).collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_quotes_and_escapes() {
        let words = split_args(r#"  -d int  -D '/tmp/a log' "x\"y\\z" a\ b ''  c'd'"e" "\n" "#).unwrap();
        assert_eq!(words, ["-d", "int", "-D", "/tmp/a log", r#"x"y\z"#, "a b", "", "cde", r"\n"]);
        assert_eq!(split_args("").unwrap(), Vec::<String>::new());
        assert_eq!(split_args(" \t\n").unwrap(), Vec::<String>::new());
        for (text, problem) in [
            ("-a 'b", "single quote is not closed"),
            ("-a \"b", "double quote is not closed"),
            ("-a \"b\\", "double quote is not closed"),
            ("-a b\\", "ends with a backslash"),
        ] {
            let error = split_args(text).unwrap_err().to_string();
            assert!(error.contains(problem), "{text:?}: {error}");
        }
    }

    #[test]
    fn quoting_round_trips() {
        let argv: Vec<String> = [
            "qemu-system-x86_64",
            "file=/var/tmp/a b/disk.img",
            "it's",
            "\"quoted\"",
            "",
            "$HOME `x` \\ * ? ; & | < > ( ) # ~",
            "tab\there\nnewline",
            "plain-word_1.2,3:4@5%6+7=8",
        ]
        .iter()
        .map(|word| word.to_string())
        .collect();
        let line = command_line(&argv);
        assert_eq!(split_args(&line).unwrap(), argv);
        assert!(line.starts_with("qemu-system-x86_64 'file=/var/tmp/a b/disk.img' 'it'\\''s' "), "{line}");
        assert!(line.ends_with(" plain-word_1.2,3:4@5%6+7=8"), "{line}");
        // A real shell reads the same words back.
        let output = std::process::Command::new("sh").arg("-c").arg(format!("printf '%s\\0' {line}")).output().unwrap();
        let words: Vec<String> =
            String::from_utf8(output.stdout).unwrap().split_terminator('\0').map(str::to_owned).collect();
        assert_eq!(words, argv);
    }
}
