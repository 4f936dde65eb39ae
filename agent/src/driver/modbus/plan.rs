//! Block-read planning: the fewest requests that cover every value of a map.
//!
//! Values of one table are sorted by address and merged into one block while
//! * the block stays within the device's per-request limit (`max_registers` for FC03/FC04,
//!   `max_bits` for FC01/FC02),
//! * the unused addresses between two values are at most `max_gap` (many devices answer
//!   exception 2 when a read touches an address they do not implement, so the default is 0),
//! * and that filler never touches a hole (addresses the map says must not be read).
//!
//! A value is never split across two requests (a float read in halves can tear).

use super::map::{Hole, Point, Table};

/// One request: `count` registers (or bits) of `table` from `start`, holding the values
/// `members` (indices into the planned points).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block {
    pub table: Table,
    pub start: u16,
    pub count: u16,
    pub members: Vec<usize>,
}

impl Block {
    /// `holding registers 0x0064-0x0077 (FC03)` — how errors name a block.
    #[must_use]
    pub fn describe(&self) -> String {
        let last = u32::from(self.start) + u32::from(self.count) - 1;
        format!(
            "{} 0x{:04X}-0x{:04X} (FC{:02})",
            self.table,
            self.start,
            last,
            self.table.function_code()
        )
    }
}

/// Limits the planner respects; from the register map.
#[derive(Debug, Clone, Copy)]
pub struct Limits<'a> {
    pub max_registers: u16,
    pub max_bits: u16,
    pub max_gap: u16,
    pub holes: &'a [Hole],
}

/// Plans the requests for `points`. Every point ends up in exactly one block. Points are
/// assumed valid (width within the per-request limit, not in a hole): the map loader checks.
#[must_use]
pub fn plan(points: &[Point], limits: &Limits<'_>) -> Vec<Block> {
    let mut order: Vec<usize> = (0..points.len()).collect();
    order.sort_by_key(|&i| (points[i].table, points[i].address, points[i].ty.width()));
    let mut blocks: Vec<Block> = Vec::new();
    // Exclusive end of the current block, as u32 so 0xFFFF + 1 does not wrap.
    let mut end = 0u32;
    for i in order {
        let p = points[i];
        let p_start = u32::from(p.address);
        let p_end = p_start + u32::from(p.ty.width());
        let max = u32::from(if p.table.is_bits() {
            limits.max_bits
        } else {
            limits.max_registers
        });
        if let Some(b) = blocks.last_mut()
            && b.table == p.table
        {
            let b_start = u32::from(b.start);
            let new_end = end.max(p_end);
            let gap_ok = p_start <= end + u32::from(limits.max_gap);
            let fits = new_end - b_start <= max;
            let filler_ok = p_start <= end || !touches_hole(limits.holes, p.table, end, p_start);
            if gap_ok && fits && filler_ok {
                end = new_end;
                b.count = u16::try_from(end - b_start).unwrap_or(u16::MAX);
                b.members.push(i);
                continue;
            }
        }
        end = p_end;
        blocks.push(Block {
            table: p.table,
            start: p.address,
            count: p.ty.width(),
            members: vec![i],
        });
    }
    blocks
}

/// Whether any address in `from..to` (exclusive) lies in a hole of `table`.
fn touches_hole(holes: &[Hole], table: Table, from: u32, to: u32) -> bool {
    holes
        .iter()
        .any(|h| h.table == table && u32::from(h.start) < to && from <= u32::from(h.end))
}

#[cfg(test)]
mod tests {
    use super::super::map::ValueType;
    use super::*;

    fn p(table: Table, address: u16, ty: ValueType) -> Point {
        Point { table, address, ty }
    }
    const F: ValueType = ValueType::Float32;
    const HR: Table = Table::Holding;
    const IR: Table = Table::Input;

    fn lim(max_registers: u16, max_gap: u16, holes: &[Hole]) -> Limits<'_> {
        Limits {
            max_registers,
            max_bits: 2000,
            max_gap,
            holes,
        }
    }

    fn spans(blocks: &[Block]) -> Vec<(Table, u16, u16)> {
        blocks.iter().map(|b| (b.table, b.start, b.count)).collect()
    }

    #[test]
    fn adjacent_values_merge_into_one_request() {
        let pts: Vec<Point> = (0..10).map(|i| p(HR, 100 + 2 * i, F)).collect();
        let b = plan(&pts, &lim(125, 0, &[]));
        assert_eq!(spans(&b), [(HR, 100, 20)]);
        assert_eq!(b[0].members, (0..10).collect::<Vec<_>>());
    }

    #[test]
    fn tables_never_share_a_request_and_order_of_points_does_not_matter() {
        let pts = [p(IR, 2, F), p(HR, 0, F), p(IR, 0, F), p(HR, 2, F)];
        let b = plan(&pts, &lim(125, 0, &[]));
        assert_eq!(spans(&b), [(HR, 0, 4), (IR, 0, 4)]);
        assert_eq!(b[0].members, [1, 3]);
        assert_eq!(b[1].members, [2, 0]);
    }

    #[test]
    fn max_registers_splits_without_tearing_a_value() {
        // 5 floats = 10 registers, limit 5: a float never straddles two requests.
        let pts: Vec<Point> = (0..5).map(|i| p(IR, 2 * i, F)).collect();
        let b = plan(&pts, &lim(5, 0, &[]));
        assert_eq!(spans(&b), [(IR, 0, 4), (IR, 4, 4), (IR, 8, 2)]);
    }

    #[test]
    fn gaps_are_bridged_only_up_to_max_gap() {
        let pts = [p(IR, 0, F), p(IR, 4, F), p(IR, 10, F)];
        assert_eq!(
            spans(&plan(&pts, &lim(125, 0, &[]))),
            [(IR, 0, 2), (IR, 4, 2), (IR, 10, 2)]
        );
        assert_eq!(spans(&plan(&pts, &lim(125, 2, &[]))), [(IR, 0, 6), (IR, 10, 2)]);
        assert_eq!(spans(&plan(&pts, &lim(125, 4, &[]))), [(IR, 0, 12)]);
    }

    #[test]
    fn holes_are_never_read_across() {
        let holes = [
            Hole {
                table: IR,
                start: 7,
                end: 7,
            },
            Hole {
                table: HR,
                start: 2,
                end: 3,
            },
        ];
        let pts = [p(IR, 0, F), p(IR, 4, F), p(IR, 10, F)];
        // Gap 6..10 contains the hole at 7: split there even though max_gap allows it.
        assert_eq!(
            spans(&plan(&pts, &lim(125, 10, &holes))),
            [(IR, 0, 6), (IR, 10, 2)]
        );
        // A hole in another table does not matter.
        let pts = [p(IR, 0, F), p(IR, 4, F)];
        assert_eq!(spans(&plan(&pts, &lim(125, 10, &holes[1..]))), [(IR, 0, 6)]);
    }

    #[test]
    fn overlapping_and_duplicate_points_share_a_block() {
        let pts = [
            p(HR, 0, ValueType::String { len: 10 }),
            p(HR, 4, ValueType::Uint16),
            p(HR, 0, ValueType::Uint16),
        ];
        let b = plan(&pts, &lim(125, 0, &[]));
        assert_eq!(spans(&b), [(HR, 0, 10)]);
        assert_eq!(b[0].members.len(), 3);
    }

    #[test]
    fn top_of_address_space_does_not_wrap() {
        let pts = [p(HR, 0xFFFE, F), p(HR, 0, F)];
        let b = plan(&pts, &lim(125, 124, &[]));
        assert_eq!(spans(&b), [(HR, 0, 2), (HR, 0xFFFE, 2)]);
        assert_eq!(b[1].describe(), "holding registers 0xFFFE-0xFFFF (FC03)");
    }

    #[test]
    fn builtin_maps_plan_into_valid_requests() {
        for (name, _) in super::super::map::BUILTIN {
            let m = super::super::map::load(name).unwrap();
            let pts: Vec<Point> = m
                .identity
                .iter()
                .map(|i| i.point)
                .chain(m.readings.iter().map(|r| r.point))
                .collect();
            let limits = Limits {
                max_registers: m.max_registers,
                max_bits: m.max_bits,
                max_gap: m.max_gap,
                holes: &m.holes,
            };
            let blocks = plan(&pts, &limits);
            let mut seen = vec![0; pts.len()];
            for b in &blocks {
                assert!(b.count <= m.max_registers, "{name}: {}", b.describe());
                let (start, end) = (u32::from(b.start), u32::from(b.start) + u32::from(b.count));
                assert!(
                    !touches_hole(&m.holes, b.table, start, end),
                    "{name}: {}",
                    b.describe()
                );
                for &i in &b.members {
                    seen[i] += 1;
                    let p = pts[i];
                    assert!(p.table == b.table && u32::from(p.address) >= start, "{name}");
                    assert!(u32::from(p.address) + u32::from(p.ty.width()) <= end, "{name}");
                }
            }
            assert!(seen.iter().all(|&n| n == 1), "{name}: {seen:?}");
            // Fewer requests than values: neighbours were merged.
            assert!(
                blocks.len() < pts.len(),
                "{name}: {} blocks for {} values",
                blocks.len(),
                pts.len()
            );
        }
    }

    #[test]
    fn bits_use_their_own_limit() {
        let pts: Vec<Point> = (0..10).map(|i| p(Table::Coil, i, ValueType::Bool)).collect();
        let b = plan(
            &pts,
            &Limits {
                max_registers: 1,
                max_bits: 4,
                max_gap: 0,
                holes: &[],
            },
        );
        assert_eq!(
            spans(&b),
            [(Table::Coil, 0, 4), (Table::Coil, 4, 4), (Table::Coil, 8, 2)]
        );
    }
}
