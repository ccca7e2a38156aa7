//! Newest-first application must equal the obvious oldest-first one: apply every file in
//! order, cut the image at each Commit, and fail on a page that no file wrote since the
//! last shrink below it.

use super::*;
use crate::ltx::Encoder;
use crate::replica::read::ChunkSpec;
use proptest::prelude::*;

const PS: u32 = 512;

/// One plan file: its Commit and the pages it holds (pgno, fill byte).
#[derive(Debug, Clone)]
struct Spec {
    commit: u32,
    pages: Vec<(u32, u8)>,
}

fn encode(txid: u64, s: &Spec) -> Vec<u8> {
    let mut enc = Encoder::new(Vec::new(), Header::new(PS, s.commit, txid, txid, 0)).unwrap();
    for (pgno, fill) in &s.pages {
        enc.write_page(*pgno, &vec![*fill; PS as usize]).unwrap();
    }
    enc.finish().unwrap().0
}

/// The reference: oldest first, as Litestream applies a plan.
fn forward(specs: &[Spec]) -> Result<Vec<u8>, String> {
    let mut image: Vec<Option<u8>> = Vec::new();
    for s in specs {
        for (pgno, fill) in &s.pages {
            let i = *pgno as usize - 1;
            if image.len() <= i {
                image.resize(i + 1, None);
            }
            image[i] = Some(*fill);
        }
        image.truncate(s.commit as usize);
    }
    let commit = specs.last().unwrap().commit as usize;
    image.resize(commit, None);
    let mut out = Vec::new();
    for (i, p) in image.iter().enumerate() {
        let fill = p.ok_or(format!("page {} missing", i + 1))?;
        out.extend(std::iter::repeat_n(fill, PS as usize));
    }
    Ok(out)
}

fn newest_first(specs: &[Spec]) -> Result<Vec<u8>, RestoreError> {
    let infos: Vec<LtxFileInfo> = specs
        .iter()
        .enumerate()
        .map(|(i, s)| LtxFileInfo {
            level: 0,
            min_txid: i as u64 + 1,
            max_txid: i as u64 + 1,
            size: encode(i as u64 + 1, s).len() as u64,
            created_at: std::time::UNIX_EPOCH,
        })
        .rev()
        .collect();
    let keys: Vec<String> = infos.iter().map(|f| format!("{}", f.min_txid)).collect();
    let (tx, mut rx) = mpsc::channel(specs.len());
    for (i, f) in infos.iter().enumerate() {
        let bytes = encode(f.min_txid, &specs[f.min_txid as usize - 1]);
        let spec = ChunkSpec {
            file: i,
            level: 0,
            min_txid: f.min_txid,
            max_txid: f.max_txid,
            offset: 0,
            len: bytes.len() as u64,
        };
        tx.try_send(Ok((spec, bytes.into()))).unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out.db");
    let out = File::create_new(&path).unwrap();
    let mut merge = Merge::default();
    apply_newest_first(&mut merge, &infos, &keys, &mut rx, &out, &mut |_, _| {})?;
    let applied = merge.finish()?;
    out.set_len(u64::from(applied.commit) * u64::from(PS))
        .unwrap();
    Ok(std::fs::read(&path).unwrap())
}

fn spec_strategy() -> impl Strategy<Value = Vec<Spec>> {
    let snapshot = (1u32..12).prop_map(|c| Spec {
        commit: c,
        pages: (1..=c).map(|p| (p, 1)).collect(),
    });
    let incremental = (
        1u32..16,
        prop::collection::vec(any::<bool>(), 16),
        any::<u8>(),
    );
    (snapshot, prop::collection::vec(incremental, 0..8)).prop_map(|(snap, incs)| {
        let mut out = vec![snap];
        for (k, (commit, chosen, fill)) in incs.into_iter().enumerate() {
            let pages = (1..=commit)
                .filter(|p| chosen[*p as usize - 1])
                .map(|p| (p, fill.max(2).wrapping_add(k as u8)))
                .collect();
            out.push(Spec { commit, pages });
        }
        out
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn newest_first_equals_oldest_first(specs in spec_strategy()) {
        match (forward(&specs), newest_first(&specs)) {
            (Ok(a), Ok(b)) => prop_assert_eq!(a, b),
            (Err(_), Err(RestoreError::Inconsistent(m))) => {
                prop_assert!(m.contains("was never written"), "{}", m)
            }
            (a, b) => prop_assert!(false, "forward {:?} vs newest-first {:?}", a.map(|v| v.len()), b.map(|v| v.len())),
        }
    }
}

#[test]
fn shrink_then_regrow_needs_the_growth_pages() {
    let snap = Spec {
        commit: 6,
        pages: (1..=6).map(|p| (p, 1)).collect(),
    };
    let shrink = Spec {
        commit: 3,
        pages: vec![(2, 7)],
    };
    let partial_regrow = Spec {
        commit: 6,
        pages: vec![(4, 8), (6, 8)],
    };
    let err = newest_first(&[snap.clone(), shrink.clone(), partial_regrow]).unwrap_err();
    assert!(err.to_string().contains("page 5 of 6"), "{err}");
    let regrow = Spec {
        commit: 6,
        pages: vec![(4, 8), (5, 8), (6, 8)],
    };
    let got = newest_first(&[snap.clone(), shrink.clone(), regrow.clone()]).unwrap();
    assert_eq!(got, forward(&[snap, shrink, regrow]).unwrap());
}

#[test]
fn chain_is_checked_from_the_names() {
    let mk = |min, max| LtxFileInfo {
        level: 0,
        min_txid: min,
        max_txid: max,
        size: 0,
        created_at: std::time::UNIX_EPOCH,
    };
    let keys: Vec<String> = (0..3).map(|i| format!("k{i}")).collect();
    assert!(check_chain(&[mk(1, 5), mk(6, 6), mk(5, 9)], &keys).is_ok());
    let gap = check_chain(&[mk(1, 5), mk(7, 8)], &keys).unwrap_err();
    assert!(gap.to_string().contains("k1"), "{gap}");
    assert!(gap.to_string().contains("0000000000000005"), "{gap}");
    let no_snapshot = check_chain(&[mk(2, 5)], &keys).unwrap_err();
    assert!(
        no_snapshot.to_string().contains("snapshot"),
        "{no_snapshot}"
    );
}
