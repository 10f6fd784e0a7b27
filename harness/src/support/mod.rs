//! The ground every step stands on: the Docker engine and the images, the
//! project's git repository, Debian packaging (debian/control, package
//! relations, dpkg-deb), the host's own programs, running them, and progress
//! output.

pub mod debian;
pub mod docker;
pub mod git;
pub mod host;
pub mod images;
pub mod process;
pub mod progress;
pub mod subnet;
#[doc(hidden)]
pub mod testing;
