//! The registry: every backend vbench knows, one line each. The CLI's names (`--backend`
//! choices, `all`), the isolation matrix's columns, and the report colours all come from here,
//! so a new backend is one module plus one line below.

use crate::{bt, container, crun, gvisor, kvm, native, peer, vm, Backend, Config};

/// One backend: its name, whether it is a peer tool, its colour in reports, how to make it.
#[derive(Clone, Copy)]
pub struct Entry {
    /// Name on the command line and in results.
    pub name: &'static str,
    /// A peer tool measured beside vbench's own backends: selected only by name, never by `all`.
    pub peer: bool,
    /// Selected by `all` (vbench's own levels that are quick to start; the whole-OS VM, which
    /// boots an operating system, is selected by name).
    pub in_all: bool,
    /// Its colour in charts and matrices (`#rrggbb`), stable across runs.
    pub colour: &'static str,
    /// Makes it with the given settings.
    pub make: fn(&Config) -> Box<dyn Backend>,
}

impl std::fmt::Debug for Entry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Entry")
            .field("name", &self.name)
            .field("peer", &self.peer)
            .field("in_all", &self.in_all)
            .field("colour", &self.colour)
            .finish()
    }
}

/// Every backend in display order: the control, vbench's own levels, then the peers.
pub const REGISTRY: &[Entry] = &[
    Entry {
        name: "native",
        peer: false,
        in_all: true,
        colour: "#4e79a7",
        make: |_| Box::new(native::Native),
    },
    Entry {
        name: "container",
        peer: false,
        in_all: true,
        colour: "#f28e2b",
        make: |c| Box::new(container::Container::new(c.container.clone())),
    },
    Entry {
        name: "bt",
        peer: false,
        in_all: true,
        colour: "#59a14f",
        make: |_| Box::new(bt::BtBackend),
    },
    Entry {
        name: "kvm",
        peer: false,
        in_all: true,
        colour: "#e15759",
        make: |c| Box::new(kvm::KvmBackend::new(c.kvm.clone())),
    },
    Entry {
        name: "vm",
        peer: false,
        in_all: false,
        colour: "#ff9da7",
        make: |c| Box::new(vm::VmBackend::new(c.vm.clone())),
    },
    Entry {
        name: "qemu-user",
        peer: true,
        in_all: false,
        colour: "#9c755f",
        make: |_| Box::new(peer::Peer(peer::PeerKind::QemuUser)),
    },
    Entry {
        name: "valgrind",
        peer: true,
        in_all: false,
        colour: "#b07aa1",
        make: |_| Box::new(peer::Peer(peer::PeerKind::Valgrind)),
    },
    Entry {
        name: "crun",
        peer: true,
        in_all: false,
        colour: "#76b7b2",
        make: |c| Box::new(crun::Crun::new(c.container.limits.clone())),
    },
    Entry {
        name: "gvisor",
        peer: true,
        in_all: false,
        colour: "#edc948",
        make: |c| Box::new(gvisor::Gvisor::new(c.gvisor)),
    },
];

/// The name that selects every backend that is not a peer.
pub const ALL: &str = "all";

/// The registry's entry called `name`.
pub fn entry(name: &str) -> Option<&'static Entry> {
    REGISTRY.iter().find(|e| e.name == name)
}

/// Every backend's name, in display order.
pub fn names() -> Vec<&'static str> {
    REGISTRY.iter().map(|e| e.name).collect()
}

/// vbench's own levels (no peer), the control first.
pub fn own() -> Vec<&'static str> {
    REGISTRY
        .iter()
        .filter(|e| !e.peer)
        .map(|e| e.name)
        .collect()
}

/// Whether `all` selects the backend called `name` (the control and vbench's own levels but
/// the whole-OS VM).
pub fn in_all(name: &str) -> bool {
    entry(name).is_some_and(|e| e.in_all)
}

/// What `--backend` accepts: every name and `all`.
pub fn choices() -> Vec<&'static str> {
    let mut v = names();
    v.push(ALL);
    v
}

/// The colour of `name` in reports.
pub fn colour(name: &str) -> Option<&'static str> {
    entry(name).map(|e| e.colour)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_entry_makes_the_backend_it_names() {
        let cfg = Config::default();
        for e in REGISTRY {
            let b = (e.make)(&cfg);
            assert_eq!(b.name(), e.name);
            assert_eq!(b.is_peer(), e.peer, "{}", e.name);
        }
    }

    #[test]
    fn names_are_unique_and_colours_distinct_and_well_formed() {
        let mut n = names();
        n.sort();
        n.dedup();
        assert_eq!(n.len(), REGISTRY.len());
        let mut c: Vec<_> = REGISTRY.iter().map(|e| e.colour).collect();
        assert!(c.iter().all(|c| c.len() == 7
            && c.starts_with('#')
            && c[1..].chars().all(|h| h.is_ascii_hexdigit())));
        c.sort();
        c.dedup();
        assert_eq!(c.len(), REGISTRY.len());
    }

    #[test]
    fn all_selects_the_control_first_and_no_peer() {
        let own = own();
        assert_eq!(own[0], "native");
        assert!(own.iter().all(|n| !entry(n).unwrap().peer));
        assert!(in_all("native") && in_all("kvm") && !in_all("vm") && !in_all("gvisor"));
        assert!(REGISTRY.iter().all(|e| !(e.peer && e.in_all)));
        assert!(choices().contains(&ALL));
        assert_eq!(colour("kvm"), Some("#e15759"));
        assert_eq!(colour("nope"), None);
    }
}
