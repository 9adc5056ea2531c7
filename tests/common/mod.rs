pub mod daemon;
pub mod netns;
pub mod vm;
