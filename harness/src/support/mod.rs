//! The ground every step stands on: the Docker engine and the images, the
//! project's git repository, the host's own programs, and progress output.

pub mod docker;
pub mod git;
pub mod host;
pub mod images;
pub mod process;
pub mod progress;
#[doc(hidden)]
pub mod testing;
