//! The live members as handlers that only read them see the mesh: a cheap handle, empty for a
//! node that runs without gossip.

use infermesh_mesh::{Directory, PeerView};

#[derive(Clone, Default)]
pub struct Members(Option<Directory>);

impl Members {
    pub fn new(directory: Option<Directory>) -> Self {
        Self(directory)
    }

    pub fn peers(&self) -> Vec<PeerView> {
        self.0.as_ref().map_or_else(Vec::new, Directory::peers)
    }
}
