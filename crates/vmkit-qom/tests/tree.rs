//! The composition tree: child paths, auto-numbering, parent rules, path
//! resolution (absolute, partial, ambiguous, typed) and the qom-tree dump.
//!
//! The tree root is process-wide: each test works below its own uniquely
//! named container (`/tree-<test>`), removed when the test ends.

use vmkit_qom::{
    Error, ErrorKind, Object, ObjectRef, PathError, Phase, TYPE_CONTAINER, TYPE_DEVICE, TypeInfo, qom_tree,
    resolve_path, root,
};

mod common;
use common::*;

fn container() -> vmkit_qom::Result<ObjectRef> {
    Object::new(TYPE_CONTAINER)
}

#[test]
fn child_paths_and_parents() -> TestResult {
    let s = Scratch::new("tree-paths")?;
    assert_eq!(root().canonical_path().as_deref(), Some("/"));
    assert_eq!(s.0.canonical_path().as_deref(), Some("/tree-paths"));
    let a = container()?;
    let b = container()?;
    assert_eq!(s.0.add_child("a", &a)?, "a");
    assert_eq!(a.add_child("b", &b)?, "b");
    assert_eq!(b.canonical_path().as_deref(), Some("/tree-paths/a/b"));
    assert_eq!(b.name_in_parent().as_deref(), Some("b"));
    assert_eq!(b.parent(), Some(a.handle()));
    assert_eq!(a.child("b"), Some(b.handle()));
    assert_eq!(a.get("b")?, vmkit_qom::Value::str("/tree-paths/a/b"));
    assert_eq!(a.get_link("b")?, Some(b.handle()));
    assert!(b.describe().contains("at /tree-paths/a/b"), "{}", b.describe());
    // The parent holds a reference.
    assert_eq!(b.refcount(), 2);

    // An object outside the tree has no path, even with a parent.
    let loose = container()?;
    let inner = container()?;
    loose.add_child("inner", &inner)?;
    assert_eq!(inner.canonical_path(), None);
    assert!(inner.describe().contains("not in the tree"));

    // Children are listed in insertion order; a child<> property cannot be set or removed.
    for n in ["z", "m", "c"] {
        s.0.add_child(n, &*container()?)?;
    }
    let names: Vec<String> = s.0.children().into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, ["a", "z", "m", "c"]);
    let e = err_of(s.0.set("a", vmkit_qom::Value::str("/")));
    assert!(matches!(&e, Error::PropertyAccess { reason, .. } if reason == "a child<> property cannot be set"));
    assert_eq!(err_of(s.0.remove_property("a")).kind(), ErrorKind::PropertyNotFound);
    let infos = s.0.property_infos()?;
    let a_info = infos.iter().find(|p| p.name == "a").ok_or("no a")?;
    assert_eq!(a_info.type_name, "child<container>");
    assert!(!a_info.writable && !a_info.class_property);
    Ok(())
}

#[test]
fn auto_numbering() -> TestResult {
    let s = Scratch::new("tree-numbering")?;
    let mut devs = Vec::new();
    for i in 0..3 {
        let d = container()?;
        assert_eq!(s.0.add_child("device[*]", &d)?, format!("device[{i}]"));
        devs.push(d);
    }
    assert_eq!(devs[2].canonical_path().as_deref(), Some("/tree-numbering/device[2]"));
    // A freed number is reused; other bases count separately.
    devs[1].unparent()?;
    assert_eq!(devs[1].parent(), None);
    assert_eq!(devs[1].canonical_path(), None);
    let d = container()?;
    assert_eq!(s.0.add_child("device[*]", &d)?, "device[1]");
    assert_eq!(s.0.add_child("bar[*]", &*container()?)?, "bar[0]");
    // An explicit name that looks numbered occupies the slot.
    s.0.add_child("x[0]", &*container()?)?;
    assert_eq!(s.0.add_child("x[*]", &*container()?)?, "x[1]");
    assert_eq!(resolve_path("/tree-numbering/device[1]", None)?, d.handle());
    Ok(())
}

#[test]
fn invalid_names_and_parent_rules() -> TestResult {
    let s = Scratch::new("tree-rules")?;
    let c = container()?;
    for bad in ["", "a/b", "a[*]b", "[*]x"] {
        let e = err_of(s.0.add_child(bad, &c));
        assert!(
            matches!(&e, Error::Path(PathError::Invalid { path, .. }) if path == bad),
            "{bad:?}: {e:?}"
        );
    }
    assert_eq!(c.refcount(), 1, "a refused add_child takes no reference");
    assert_eq!(c.parent(), None);

    s.0.add_child("c", &c)?;
    // A duplicate name is refused and the second child stays free.
    let d = container()?;
    let e = err_of(s.0.add_child("c", &d));
    assert!(
        matches!(&e, Error::DuplicateProperty { name, .. } if name == "c"),
        "{e:?}"
    );
    assert_eq!(d.parent(), None);
    assert_eq!(d.refcount(), 1);
    s.0.add_child("d", &d)?;
    // A name taken by a class property is refused too.
    assert_eq!(
        err_of(s.0.add_child("type", &*container()?)).kind(),
        ErrorKind::DuplicateProperty
    );

    // One parent at a time.
    let e = err_of(d.add_child("again", &c));
    assert_eq!(e.kind(), ErrorKind::Lifecycle);
    assert!(e.to_string().contains("already has a parent"), "{e}");
    // No self-parenting, no cycles.
    assert_eq!(err_of(c.add_child("me", &c)).kind(), ErrorKind::Lifecycle);
    let e = err_of(c.add_child("up", &s.0));
    assert!(e.to_string().contains("cycle"), "{e}");
    assert_eq!(c.refcount(), 2);
    assert_eq!(s.0.refcount(), 2);
    // No children for a finalized object, nor a finalized object as a child.
    let gone = container()?.handle();
    assert_eq!(
        err_of(gone.add_child("x", &*container()?)).kind(),
        ErrorKind::ObjectFinalized
    );
    assert_eq!(err_of(s.0.add_child("gone", &gone)).kind(), ErrorKind::ObjectFinalized);
    Ok(())
}

#[test]
fn unparent_finalizes_unreferenced_children_and_unrealizes_devices() -> TestResult {
    TypeInfo::new("tree-unparent-dev").parent(TYPE_DEVICE).register()?;
    let s = Scratch::new("tree-unparent")?;
    let c = container()?;
    let grandchild = container()?;
    c.add_child("g", &grandchild)?;
    let g = grandchild.handle();
    drop(grandchild);
    s.0.add_child("c", &c)?;
    let h = c.handle();
    drop(c);
    assert_eq!(h.refcount(), 1);
    h.unparent()?;
    assert_eq!(h.phase(), Phase::Finalized);
    assert_eq!(g.phase(), Phase::Finalized, "finalizing a parent drops its children");
    assert!(s.0.child("c").is_none());
    // Unparenting a parentless or finalized object does nothing.
    h.unparent()?;
    let free = container()?;
    free.unparent()?;
    assert_eq!(free.phase(), Phase::Live);

    // A referenced child survives its unparenting, unrealized.
    let dev = Object::new("tree-unparent-dev")?;
    s.0.add_child("dev", &dev)?;
    dev.realize()?;
    dev.unparent()?;
    assert_eq!(dev.phase(), Phase::Live);
    assert!(!dev.is_realized());
    assert_eq!(dev.refcount(), 1);
    assert_eq!(dev.canonical_path(), None);
    // It can be placed again.
    s.0.add_child("dev2", &dev)?;
    assert_eq!(dev.canonical_path().as_deref(), Some("/tree-unparent/dev2"));
    Ok(())
}

#[test]
fn absolute_paths() -> TestResult {
    let s = Scratch::new("tree-abs")?;
    let a = container()?;
    let b = container()?;
    s.0.add_child("a", &a)?;
    a.add_child("b", &b)?;
    assert_eq!(resolve_path("/", None)?, root());
    assert_eq!(resolve_path("/tree-abs", None)?, s.0.handle());
    assert_eq!(resolve_path("/tree-abs/a/b", None)?, b.handle());
    // Empty components are skipped, as QEMU does.
    assert_eq!(resolve_path("//tree-abs//a/b/", None)?, b.handle());
    let e = err_of(resolve_path("/tree-abs/a/nope", None));
    assert!(
        matches!(&e, Error::Path(PathError::NotFound(p)) if p == "/tree-abs/a/nope"),
        "{e:?}"
    );
    assert_eq!(e.to_string(), "no object at path '/tree-abs/a/nope'");
    // A non-link, non-child property is not a path component.
    assert!(matches!(
        err_of(resolve_path("/tree-abs/a/type", None)),
        Error::Path(PathError::NotFound(_))
    ));
    // Type filter.
    assert_eq!(resolve_path("/tree-abs/a", Some(TYPE_CONTAINER))?, a.handle());
    let e = err_of(resolve_path("/tree-abs/a", Some(TYPE_DEVICE)));
    assert!(
        matches!(&e, Error::WrongType { type_name, expected } if type_name == "container" && expected == "device"),
        "{e:?}"
    );
    let e = err_of(resolve_path("", None));
    assert!(matches!(&e, Error::Path(PathError::Invalid { .. })), "{e:?}");
    Ok(())
}

#[test]
fn partial_paths_and_ambiguity() -> TestResult {
    TypeInfo::new("tree-partial-dev").parent(TYPE_DEVICE).register()?;
    let s = Scratch::new("tree-partial")?;
    let left = container()?;
    let right = container()?;
    s.0.add_child("left", &left)?;
    s.0.add_child("right", &right)?;
    let nic_l = Object::new("tree-partial-dev")?;
    let nic_r = container()?;
    left.add_child("tree-partial-nic", &nic_l)?;
    right.add_child("tree-partial-nic", &nic_r)?;
    let only = container()?;
    right.add_child("tree-partial-only", &only)?;

    assert_eq!(resolve_path("tree-partial-only", None)?, only.handle());
    assert_eq!(resolve_path("right/tree-partial-only", None)?, only.handle());
    assert_eq!(
        resolve_path("tree-partial/right/tree-partial-only", None)?,
        only.handle()
    );
    // Components must match whole names, at the end of the path.
    assert!(matches!(
        err_of(resolve_path("tree-partial-onl", None)),
        Error::Path(PathError::NotFound(_))
    ));
    assert!(matches!(
        err_of(resolve_path("left/tree-partial-only", None)),
        Error::Path(PathError::NotFound(_))
    ));

    // Ambiguous: both matches are named.
    let e = err_of(resolve_path("tree-partial-nic", None));
    match &e {
        Error::Path(PathError::Ambiguous { path, matches }) => {
            assert_eq!(path, "tree-partial-nic");
            assert!(matches.contains("/tree-partial/left/tree-partial-nic"), "{matches}");
            assert!(matches.contains("/tree-partial/right/tree-partial-nic"), "{matches}");
        }
        other => panic!("{other:?}"),
    }
    assert!(e.to_string().contains("is ambiguous"));
    // A kind of its own, so callers need not search the message.
    assert_eq!(e.kind(), vmkit_qom::ErrorKind::AmbiguousPath);
    assert_eq!(
        err_of(resolve_path("tree-partial-onl", None)).kind(),
        vmkit_qom::ErrorKind::Path
    );
    // A longer partial path or a type filter disambiguates.
    assert_eq!(resolve_path("left/tree-partial-nic", None)?, nic_l.handle());
    assert_eq!(resolve_path("tree-partial-nic", Some(TYPE_DEVICE))?, nic_l.handle());
    assert_eq!(
        resolve_path("tree-partial-nic", Some("tree-partial-dev"))?,
        nic_l.handle()
    );
    // A filter that matches nothing is "not found" for a partial path.
    assert!(matches!(
        err_of(resolve_path("tree-partial-only", Some(TYPE_DEVICE))),
        Error::Path(PathError::NotFound(_))
    ));
    for bad in ["a//b", "a/"] {
        assert!(
            matches!(err_of(resolve_path(bad, None)), Error::Path(PathError::Invalid { .. })),
            "{bad}"
        );
    }

    // Many matches are listed by a few, with a count of the rest.
    let many = container()?;
    s.0.add_child("many", &many)?;
    for i in 0..6 {
        let c = container()?;
        many.add_child(&format!("m{i}"), &c)?;
        c.add_child("tree-partial-many", &*container()?)?;
    }
    let e = err_of(resolve_path("tree-partial-many", None));
    match &e {
        Error::Path(PathError::Ambiguous { matches, .. }) => {
            assert_eq!(matches.matches("tree-partial-many").count(), 4, "{matches}");
            assert!(matches.ends_with("and 2 more"), "{matches}");
        }
        other => panic!("{other:?}"),
    }
    Ok(())
}

#[test]
fn qom_tree_shape() -> TestResult {
    TypeInfo::new("tree-dump-dev").parent(TYPE_DEVICE).register()?;
    let s = Scratch::new("tree-dump")?;
    let b = container()?;
    let a = Object::new("tree-dump-dev")?;
    s.0.add_child("b", &b)?;
    s.0.add_child("a", &a)?;
    b.add_child("z[*]", &*container()?)?;
    b.add_child("z[*]", &*container()?)?;
    a.add_child("inner", &*container()?)?;
    let expected = "\
/tree-dump (container)
  /a (tree-dump-dev)
    /inner (container)
  /b (container)
    /z[0] (container)
    /z[1] (container)
";
    assert_eq!(qom_tree("/tree-dump")?, expected);
    assert_eq!(qom_tree("/tree-dump/")?, expected);
    // A partial path is labelled with the canonical path.
    assert_eq!(
        qom_tree("tree-dump/b")?,
        "/tree-dump/b (container)\n  /z[0] (container)\n  /z[1] (container)\n"
    );
    assert_eq!(qom_tree("/tree-dump/a/inner")?, "/tree-dump/a/inner (container)\n");
    // The whole tree starts at "/".
    let whole = qom_tree("/")?;
    assert!(whole.starts_with("/ (container)\n"), "{whole}");
    assert!(whole.contains("\n  /objects (container)\n"), "{whole}");
    assert!(
        whole.contains("\n  /tree-dump (container)\n    /a (tree-dump-dev)\n"),
        "{whole}"
    );
    assert_eq!(err_of(qom_tree("/tree-dump/nope")).kind(), ErrorKind::Path);
    Ok(())
}
