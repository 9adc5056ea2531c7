pub mod daemon;
pub mod netns;
