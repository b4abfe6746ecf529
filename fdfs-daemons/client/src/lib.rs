//! FastDFS client library.
