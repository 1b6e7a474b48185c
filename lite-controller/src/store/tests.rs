//! Unit tests of the store: reopen, locking, decoding, and damaged files.

use super::*;
use pimesh_test_support::TempDir;

#[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
struct Rec {
    n: u32,
}

#[test]
fn creates_dir_and_survives_reopen() {
    let dir = TempDir::new("reopen");
    let nested = dir.path().join("a/b");
    {
        let s = Store::open(&nested).unwrap();
        assert!(s.is_empty());
        let t = s.table::<Rec>("t").unwrap();
        t.put("k1", &Rec { n: 1 }).unwrap();
        t.put("k2", &Rec { n: 2 }).unwrap();
        assert!(t.remove("k2").unwrap());
        assert!(!t.remove("k2").unwrap());
        assert!(!s.is_empty());
    }
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&nested).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o700);
    let s = Store::open(&nested).unwrap();
    let t = s.table::<Rec>("t").unwrap();
    assert_eq!(t.get("k1").unwrap(), Some(Rec { n: 1 }));
    assert_eq!(t.get("k2").unwrap(), None);
    assert_eq!(t.all().unwrap(), vec![("k1".to_string(), Rec { n: 1 })]);
    assert_eq!(t.len(), 1);
    assert!(!s.is_empty());
}

#[test]
fn second_open_is_refused_as_locked() {
    let dir = TempDir::new("locked");
    let _s = Store::open(dir.path()).unwrap();
    let e = Store::open(dir.path()).unwrap_err();
    assert!(matches!(e, Error::Locked { .. }), "{e:?}");
}

#[test]
fn undecodable_record_is_an_error() {
    let dir = TempDir::new("decode");
    let s = Store::open(dir.path()).unwrap();
    s.table::<String>("t")
        .unwrap()
        .put("k", &"x".into())
        .unwrap();
    let e = s.table::<Rec>("t").unwrap().get("k").unwrap_err();
    assert!(matches!(e, Error::Decode { .. }), "{e:?}");
}

/// A store with one record, marked initialized, closed; then `damage`
/// is applied to each file of `DIR/db`.
fn damaged(tag: &str, damage: impl Fn(&Path)) -> TempDir {
    let dir = TempDir::new(tag);
    {
        let s = Store::open(dir.path()).unwrap();
        assert!(!s.initialized());
        s.table::<Rec>("t")
            .unwrap()
            .put("k", &Rec { n: 7 })
            .unwrap();
        s.mark_initialized("test\n").unwrap();
    }
    for entry in std::fs::read_dir(dir.path().join("db")).unwrap() {
        let p = entry.unwrap().path();
        if p.is_file() {
            damage(&p);
        }
    }
    dir
}

#[test]
fn garbage_files_are_corrupt() {
    let dir = damaged("garbage", |p| {
        let len = std::fs::metadata(p).unwrap().len().max(64) as usize;
        std::fs::write(p, vec![0x5a; len]).unwrap();
    });
    let e = Store::open(dir.path()).unwrap_err();
    assert!(matches!(e, Error::Corrupt { .. }), "{e:?}");
}

#[test]
fn emptied_or_deleted_files_of_an_initialized_dir_are_refused_untouched() {
    // sled itself would open these as a new, empty database.
    for (tag, truncate) in [("emptied", true), ("deleted", false)] {
        let dir = damaged(tag, |p| {
            if truncate {
                std::fs::write(p, b"").unwrap()
            } else {
                std::fs::remove_file(p).unwrap()
            }
        });
        let before: Vec<_> = std::fs::read_dir(dir.path().join("db"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        let e = Store::open(dir.path()).unwrap_err();
        assert!(matches!(e, Error::Missing { .. }), "{tag}: {e:?}");
        assert!(e.to_string().contains("missing or empty"), "{e}");
        let after: Vec<_> = std::fs::read_dir(dir.path().join("db"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        assert_eq!(before, after, "{tag}: the directory changed");
    }
}

#[test]
fn marker_is_seen_on_reopen() {
    let dir = TempDir::new("marker");
    Store::open(dir.path())
        .unwrap()
        .mark_initialized("x\n")
        .unwrap();
    let s = Store::open(dir.path()).unwrap();
    assert!(s.initialized());
    assert!(s.is_empty());
}

/// A database written by the releases before the settings were spelled out
/// (`sled::Config` with only the path and the cache: sled's defaults, which
/// sled keeps in `db/conf`) opens, its records intact, and stays readable.
#[test]
fn opens_a_database_created_with_the_released_settings() {
    let dir = TempDir::new("released");
    {
        let db = sled::Config::new()
            .path(dir.path().join("db"))
            .cache_capacity(4 * 1024 * 1024)
            .open()
            .unwrap();
        let tree = db.open_tree("t").unwrap();
        tree.insert("k1", serde_json::to_vec(&Rec { n: 7 }).unwrap())
            .unwrap();
        db.flush().unwrap();
    }
    // `conf` is text followed by a CRC.
    let conf = std::fs::read(dir.path().join("db/conf")).unwrap();
    let conf = String::from_utf8_lossy(&conf);
    assert!(conf.contains("segment_size: 524288"), "{conf}");
    for _ in 0..2 {
        let s = Store::open(dir.path()).unwrap();
        let t = s.table::<Rec>("t").unwrap();
        assert_eq!(t.get("k1").unwrap(), Some(Rec { n: 7 }));
        t.put("k2", &Rec { n: 8 }).unwrap();
        drop(t);
        drop(s);
    }
}
