//! The order nodes are built in: every node after its inputs, or every cycle when there is one.
//! A depth-first walk with its own stack, so a chain of many thousand nodes cannot overflow the
//! thread's stack, and each node and edge is visited once.

use super::compile::node_of;
use super::spec::NodeSpec;
use indexmap::IndexMap;

/// Where a node stands in the walk.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mark {
    Unseen,
    /// On the walk's path: reaching it again closes a cycle.
    OnPath,
    Done,
}

/// Nodes in dependency order, or every cycle (as node lists) when there are some.
pub fn topological_order(
    nodes: &IndexMap<String, NodeSpec>,
) -> Result<Vec<String>, Vec<Vec<String>>> {
    let mut marks = vec![Mark::Unseen; nodes.len()];
    let mut in_cycle = vec![false; nodes.len()];
    let mut order = Vec::with_capacity(nodes.len());
    let mut cycles = Vec::new();
    // Each entry: a node on the path and how many of its inputs have been followed.
    let mut path: Vec<(usize, usize)> = Vec::new();
    // Where each node on the path stands in it.
    let mut depth = vec![0; nodes.len()];
    for root in 0..nodes.len() {
        if marks[root] != Mark::Unseen {
            continue;
        }
        marks[root] = Mark::OnPath;
        depth[root] = 0;
        path.push((root, 0));
        while let Some(&(node, next)) = path.last() {
            let (name, spec) = nodes.get_index(node).expect("an index of the map");
            let Some(input) = spec.inputs.get(next) else {
                marks[node] = Mark::Done;
                order.push(name.clone());
                path.pop();
                continue;
            };
            path.last_mut().expect("not empty").1 += 1;
            let Some(target) = nodes.get_index_of(node_of(input)) else {
                continue;
            };
            if target == node {
                continue; // its own input: the shape phase reports it
            }
            match marks[target] {
                Mark::Done => {}
                Mark::OnPath => {
                    let members: Vec<usize> =
                        path[depth[target]..].iter().map(|(n, _)| *n).collect();
                    if members.iter().all(|n| !in_cycle[*n]) {
                        members.iter().for_each(|n| in_cycle[*n] = true);
                        let mut cycle: Vec<String> = members
                            .iter()
                            .map(|n| nodes.get_index(*n).unwrap().0.clone())
                            .collect();
                        cycle.push(nodes.get_index(target).unwrap().0.clone());
                        cycles.push(cycle);
                    }
                }
                Mark::Unseen => {
                    marks[target] = Mark::OnPath;
                    depth[target] = path.len();
                    path.push((target, 0));
                }
            }
        }
    }
    if cycles.is_empty() {
        Ok(order)
    } else {
        Err(cycles)
    }
}
