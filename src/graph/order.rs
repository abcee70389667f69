//! The order nodes are built in: every node after its inputs, or every cycle when there is one.

use super::compile::node_of;
use super::spec::NodeSpec;
use indexmap::IndexMap;
use std::collections::{HashMap, HashSet};

/// Nodes in dependency order, or every cycle (as node lists) when there are some.
pub fn topological_order(
    nodes: &IndexMap<String, NodeSpec>,
) -> Result<Vec<String>, Vec<Vec<String>>> {
    let mut order = Vec::new();
    let mut state: HashMap<&str, u8> = HashMap::new(); // 1: on the stack, 2: done
    let mut cycles = Vec::new();
    let mut in_cycle: HashSet<String> = HashSet::new();
    fn visit<'a>(
        name: &'a str,
        nodes: &'a IndexMap<String, NodeSpec>,
        state: &mut HashMap<&'a str, u8>,
        stack: &mut Vec<&'a str>,
        order: &mut Vec<String>,
        cycles: &mut Vec<Vec<String>>,
        in_cycle: &mut HashSet<String>,
    ) {
        match state.get(name) {
            Some(2) => return,
            Some(1) => {
                let start = stack.iter().position(|n| *n == name).expect("on the stack");
                let mut cycle: Vec<String> = stack[start..].iter().map(|n| n.to_string()).collect();
                if cycle.iter().all(|n| !in_cycle.contains(n)) {
                    in_cycle.extend(cycle.iter().cloned());
                    cycle.push(name.to_string());
                    cycles.push(cycle);
                }
                return;
            }
            _ => {}
        }
        state.insert(name, 1);
        stack.push(name);
        for input in &nodes[name].inputs {
            if let Some((key, _)) = nodes.get_key_value(node_of(input)) {
                if key != name {
                    visit(key, nodes, state, stack, order, cycles, in_cycle);
                }
            }
        }
        stack.pop();
        state.insert(name, 2);
        order.push(name.to_string());
    }
    for name in nodes.keys() {
        visit(
            name,
            nodes,
            &mut state,
            &mut Vec::new(),
            &mut order,
            &mut cycles,
            &mut in_cycle,
        );
    }
    if cycles.is_empty() {
        Ok(order)
    } else {
        Err(cycles)
    }
}
