//! Address allocation from a subnet, persisted across processes (being written).
