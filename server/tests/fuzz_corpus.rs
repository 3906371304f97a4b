//! Every committed fuzz corpus file (`fuzz/corpus/<target>/*`: hand-written seeds, what the
//! fuzzer found interesting, and the inputs of crashes it found and we fixed) through its
//! target in `wsredis::fuzzing`, without a fuzzer: so `make test` keeps the regressions fixed
//! on a stable toolchain. A panic names the target and the file.

use std::path::PathBuf;

#[test]
fn every_corpus_file_goes_through_its_target_without_a_panic() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus");
    let mut total = 0;
    for (name, target) in wsredis::fuzzing::TARGETS {
        let dir = root.join(name);
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("corpus {}: {e}", dir.display()))
            .map(|e| e.expect("corpus entry").path())
            .collect();
        files.sort();
        assert!(!files.is_empty(), "target {name} has no corpus");
        for file in &files {
            let data = std::fs::read(file).expect("corpus file");
            let outcome = std::panic::catch_unwind(|| target(&data));
            assert!(
                outcome.is_ok(),
                "target {name} panicked on {}",
                file.display()
            );
        }
        println!("{name}: {} files", files.len());
        total += files.len();
    }
    println!("{total} corpus files, no panic");
}
