//! Infinite-width kernels of fully connected networks. Placeholder.
