//! Known-answer tests for the RAKP and session-key computations of cipher suites 3 and 17.
//! The expected values were computed independently with Python's `hmac`/`hashlib` and
//! `openssl enc -aes-128-cbc -nopad` from the same inputs (ipmi_sim has no suite 17, so these
//! are what proves the SHA-256 path).

use super::*;

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn kuid() -> [u8; 20] {
    let mut k = [0u8; 20];
    k[..10].copy_from_slice(b"Adm1nPass!");
    k
}

fn rakp(hash: Hash, kuid: &[u8; 20]) -> Rakp<'_> {
    let mut rm = [0u8; 16];
    let mut rc = [0u8; 16];
    for i in 0..16u8 {
        rm[usize::from(i)] = i;
        rc[usize::from(i)] = 0x10 + i;
    }
    let mut guid = [0u8; 16];
    guid.copy_from_slice(&hex("4754424d430000000000475400000001"));
    Rakp {
        hash,
        kuid,
        console_sid: 0xA1B2_C3D4,
        bmc_sid: 0x0000_0102,
        console_rand: rm,
        bmc_rand: rc,
        bmc_guid: guid,
        role: 0x14,
        user: b"ADMIN",
    }
}

struct Kat {
    hash: Hash,
    rakp2: &'static str,
    rakp3: &'static str,
    sik: &'static str,
    rakp4: &'static str,
    integrity: &'static str,
    aes: &'static str,
}

const KATS: [Kat; 2] = [
    Kat {
        hash: Hash::Sha1,
        rakp2: "3c07b34d92be2c4a8d3f0cd9e9d57e6273e368b8",
        rakp3: "588cadb1870ae4d4dd29678fdf7cc4598fb317ab",
        sik: "e76f3c61ccc2a186581ad1d1b41a0addf40d91d5",
        rakp4: "3feace630cfbaaba85b8a9de",
        integrity: "0fe59fd68d56b5305585d88d",
        aes: "a0a1a2a3a4a5a6a7a8a9aaabacadaeaf732e650c5eee15beb1c99e5d7630b059",
    },
    Kat {
        hash: Hash::Sha256,
        rakp2: "55eaf8dfd6622ea709569f56826b15a3be6834baca232b57a36aee2c711a0745",
        rakp3: "80192ea93f21eaa9707a327b9540f16579832f79a987d176d904f1029c656135",
        sik: "a54ae59e2c70d92a16822d228a20765130583f616f2a6ad4722c78cad5fc7bc0",
        rakp4: "dd109d2b19f6ce522d9e7118c2be1293",
        integrity: "a528be48024d22e24ae3ead4eacfedee",
        aes: "a0a1a2a3a4a5a6a7a8a9aaabacadaeaf745893f0d64dd751f658d6318ecfd300",
    },
];

#[test]
fn rakp_codes_sik_and_session_keys_match_independent_computation() {
    let k = kuid();
    for kat in &KATS {
        let r = rakp(kat.hash, &k);
        assert_eq!(r.rakp2_auth_code(), hex(kat.rakp2), "{:?} RAKP2", kat.hash);
        assert_eq!(r.rakp3_auth_code(), hex(kat.rakp3), "{:?} RAKP3", kat.hash);
        let sik = r.sik();
        assert_eq!(sik, hex(kat.sik), "{:?} SIK", kat.hash);
        assert_eq!(r.rakp4_icv(&sik), hex(kat.rakp4), "{:?} RAKP4", kat.hash);
        let keys = Keys::derive(kat.hash, &sik);
        let mut covered = vec![0x06, 0x40];
        covered.extend_from_slice(&[1, 2, 3, 4, 1, 2, 3, 4, 0, 0, 0xFF, 0xFF, 2, 7]);
        assert_eq!(
            keys.integrity(&covered),
            hex(kat.integrity),
            "{:?} integrity",
            kat.hash
        );
        let mut iv = [0u8; 16];
        for (i, b) in iv.iter_mut().enumerate() {
            *b = 0xA0 + u8::try_from(i).unwrap();
        }
        let plain = [0x20, 0x18, 0xc8, 0x81, 0x04, 0x01, 0x7a];
        let sealed = keys.encrypt(iv, &plain);
        assert_eq!(sealed, hex(kat.aes), "{:?} AES-CBC-128", kat.hash);
        assert_eq!(keys.decrypt(&sealed).unwrap(), plain);
    }
}

#[test]
fn confidentiality_round_trips_every_length_and_rejects_bad_padding() {
    let keys = Keys::derive(Hash::Sha1, &[7; 20]);
    for len in 0..40 {
        let plain: Vec<u8> = (0..len).map(|i| u8::try_from(i).unwrap()).collect();
        let sealed = keys.encrypt([9; 16], &plain);
        assert_eq!(sealed.len() % 16, 0);
        assert_eq!(keys.decrypt(&sealed).unwrap(), plain);
    }
    assert!(keys.decrypt(&[0; 16]).is_err());
    assert!(keys.decrypt(&[0; 33]).is_err());
    // Random ciphertext decrypts to garbage padding (almost always): an error, not a panic.
    let mut errors = 0;
    for i in 0..64u8 {
        if keys.decrypt(&[i; 48]).is_err() {
            errors += 1;
        }
    }
    assert!(errors > 50);
}

#[test]
fn keys_and_rakp_inputs_never_show_in_debug() {
    let keys = Keys::derive(Hash::Sha256, &[0x42; 32]);
    let dbg = format!("{keys:?}");
    assert!(!dbg.contains("66") && dbg.contains("***"), "{dbg}");
    let k = kuid();
    let dbg = format!("{:?}", rakp(Hash::Sha1, &k));
    assert!(!dbg.contains("Adm1n") && !dbg.contains("65, 100"), "{dbg}");
}

#[test]
fn rakp_status_codes_map_to_auth_errors_with_clear_details() {
    assert!(
        matches!(rakp_status("RAKP 2", 0x0D), DriverError::Auth { detail } if detail.contains("unknown user"))
    );
    assert!(
        matches!(rakp_status("RAKP 2", 0x09), DriverError::Auth { detail } if detail.contains(ROLE_REFUSED))
    );
    assert!(
        matches!(rakp_status("RAKP 4", 0x0F), DriverError::Auth { detail } if detail.contains("wrong password"))
    );
    assert!(
        matches!(rakp_status("Open Session", 0x11), DriverError::DeviceException(d) if d.contains("cipher suite"))
    );
}

#[test]
fn ipmi15_md5_auth_code_matches_independent_computation() {
    // Python: hashlib.md5(pw16 + sid_le + msg + seq_le + pw16) with the inputs below.
    let mut pw = [0u8; 16];
    pw[..10].copy_from_slice(b"Adm1nPass!");
    let msg = [0x20, 0x18, 0xc8, 0x81, 0x04, 0x01, 0x7a];
    let code = v15_auth_code(0x02, &pw, 0x1122_3344, &msg, 0x0A0B_0C0D);
    assert_eq!(code.to_vec(), hex("b9622d92d1cb43f1db393f7da271229d"));
    assert_eq!(v15_auth_code(0x04, &pw, 1, &msg, 2), pw, "straight password");
}
