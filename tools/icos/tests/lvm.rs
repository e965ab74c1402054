//! `icos lvm` on bad input: exit status 2, an error naming the file, line and problem, and no
//! output left behind. (tests/build_root/lvm.rs checks good output with lvm2.)

mod common;

use std::fs;

use common::{directory_entries, icos};

const SEED: &str = "6a7c5e2f-0d8b-4c1e-9f3a-2b4d6e8f0a1c";

#[test]
fn bad_volume_tables_and_fillings_exit_2_naming_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big.img");
    fs::File::create(&big).unwrap().set_len((4 << 20) + 4096).unwrap();
    let cases: &[(&str, &[&str], &str)] = &[
        ("a,0,2,\nb,1,2,\n", &[], "volumes.csv:2: volume \"b\": extents 1..3 overlap \"a\" (line 1, extents 0..2)"),
        (
            "a,0,2,\nb,20,5,\n",
            &[],
            "volumes.csv:2: volume \"b\": extents 20..25 lie beyond the physical volume, which has 24 extents",
        ),
        ("a,0,2,\na,2,2,\n", &[], "volumes.csv:2: volume \"a\": the name is used before, on line 1"),
        ("# comment\nA root,0,2,\n", &[], "volumes.csv:2: volume \"A root\": ' ' is not allowed"),
        ("a,0,1,\n", &["a"], "is larger than volume \"a\" (4194304 bytes, "),
        ("a,0,1,\n", &["b"], "is for volume \"b\", which"),
    ];
    for (table, images, expected) in cases {
        let volumes = dir.path().join("volumes.csv");
        fs::write(&volumes, table).unwrap();
        let out_dir = tempfile::tempdir().unwrap();
        let mut command = icos();
        command.arg("lvm").arg("--volumes").arg(&volumes).args([
            "--size",
            "100M",
            "--vg-name",
            "hostlvm",
            "--seed",
            SEED,
        ]);
        command.arg("--output").arg(out_dir.path().join("pv.img"));
        command.arg("--package").arg(out_dir.path().join("pv.tzst"));
        for name in *images {
            command.arg(format!("--image={name}={}", big.display()));
        }
        let output = command.output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{table:?}: {stderr}");
        assert!(stderr.contains(expected), "{table:?}: expected {expected:?} in {stderr}");
        assert!(stderr.contains(&volumes.display().to_string()), "{table:?}: the file is not named: {stderr}");
        assert!(directory_entries(out_dir.path()).is_empty(), "{table:?} left {:?}", directory_entries(out_dir.path()));
    }
}
