//! `icos grubenv` against GRUB's own grub-editenv: the same bytes, each reads the other's.

use std::fs;
use std::process::{Command, Output};

use crate::common::{icos, tool_command};

fn checked(output: Output, what: &str) -> String {
    assert!(output.status.success(), "{what} failed: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn run(command: &mut Command, what: &str) -> String {
    checked(command.output().unwrap(), what)
}

#[test]
fn blocks_are_byte_identical_to_grub_editenv_and_readable_both_ways() {
    let dir = tempfile::tempdir().unwrap();
    let ours = dir.path().join("ours");
    let theirs = dir.path().join("theirs");
    let variables = ["boot_alternative=A", "boot_cycle=install", "args=root=PARTUUID=x a\\b"];
    run(icos().args(["grubenv", "create", "-o"]).arg(&ours).args(variables), "icos grubenv create");
    run(tool_command("grub-editenv").arg(&theirs).arg("create"), "grub-editenv create");
    run(tool_command("grub-editenv").arg(&theirs).arg("set").args(variables), "grub-editenv set");
    assert_eq!(fs::read(&ours).unwrap(), fs::read(&theirs).unwrap());

    // An upgrade commit as the node does it, read back by GRUB's tool.
    run(
        icos().args(["grubenv", "set"]).arg(&theirs).args(["boot_alternative=B", "boot_cycle=first_boot"]),
        "icos grubenv set",
    );
    let listed = run(tool_command("grub-editenv").arg(&theirs).arg("list"), "grub-editenv list");
    assert_eq!(listed, "boot_alternative=B\nboot_cycle=first_boot\nargs=root=PARTUUID=x a\\b\n");
    let ours_listed = run(icos().args(["grubenv", "list"]).arg(&theirs), "icos grubenv list");
    assert_eq!(ours_listed, listed);
}
