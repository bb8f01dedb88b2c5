//! rtnetlink: links, veth pairs, bridges, addresses and routes (being written).
