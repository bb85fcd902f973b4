//! The parts of a push target, checked before they are stored or sent to: a Web Push
//! endpoint that cannot be turned against the server's own network, the subscription's keys,
//! FCM and APNs tokens.

use std::net::{IpAddr, Ipv4Addr};

use base64::Engine;
use base64::engine::general_purpose::{URL_SAFE, URL_SAFE_NO_PAD};

use crate::error::FieldError;

/// The longest endpoint URL accepted (push services' URLs are a few hundred characters).
pub const MAX_ENDPOINT_LEN: usize = 2048;

/// Checks a Web Push endpoint. It must be `https://` to a named host or a public address:
/// not `localhost`, nor an address literal in a private, loopback, link-local, unique-local,
/// shared or unspecified range, so that a subscription cannot make the server send requests
/// into its own network. `allow_private` (`TIDINGS_PUSH_ALLOW_PRIVATE_ENDPOINTS`, for tests)
/// lifts both rules, plain `http://` included.
pub fn push_endpoint(
    field: &str,
    value: &str,
    allow_private: bool,
) -> Result<url::Url, FieldError> {
    let invalid = |code, message: &str| Err(FieldError::new(field, code, message));
    if value.len() > MAX_ENDPOINT_LEN {
        return invalid(
            "too_long",
            &format!("at most {MAX_ENDPOINT_LEN} characters"),
        );
    }
    let Ok(url) = url::Url::parse(value) else {
        return invalid("invalid_url", "must be an absolute https:// URL");
    };
    match url.scheme() {
        "https" => {}
        "http" if allow_private => {}
        _ => return invalid("not_https", "must be an https:// URL"),
    }
    if !url.username().is_empty() || url.password().is_some() {
        return invalid("invalid_url", "must not carry credentials");
    }
    let public = match url.host() {
        None => return invalid("invalid_url", "must name a host"),
        Some(url::Host::Domain(name)) => {
            let name = name.trim_end_matches('.').to_ascii_lowercase();
            name != "localhost" && !name.ends_with(".localhost")
        }
        Some(url::Host::Ipv4(ip)) => is_public(IpAddr::V4(ip)),
        Some(url::Host::Ipv6(ip)) => is_public(IpAddr::V6(ip)),
    };
    if !public && !allow_private {
        return invalid(
            "private_address",
            "must be a public host, not localhost or a private, loopback or link-local address",
        );
    }
    Ok(url)
}

/// Whether the server may send to this address: not private, loopback, link-local,
/// unique-local, shared (100.64/10), unspecified, broadcast or multicast.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public_v4(v4);
            }
            let first = v6.segments()[0];
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00 // unique local, fc00::/7
                || (first & 0xffc0) == 0xfe80) // link-local, fe80::/10
        }
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    !(ip.is_private()
        || ip.is_loopback()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || a == 0
        || (a == 100 && (64..128).contains(&b)))
}

/// Decodes base64url, padded or not (browsers send it unpadded).
fn base64url(value: &str) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD
        .decode(value)
        .or_else(|_| URL_SAFE.decode(value))
        .ok()
}

/// A subscription's public key: base64url of an uncompressed P-256 point (65 bytes) that is
/// on the curve. Returned re-encoded unpadded.
pub fn p256dh(field: &str, value: &str) -> Result<String, FieldError> {
    let bytes = base64url(value)
        .filter(|b| b.len() == 65 && b[0] == 4)
        .filter(|b| p256::PublicKey::from_sec1_bytes(b).is_ok())
        .ok_or_else(|| {
            FieldError::new(
                field,
                "invalid_key",
                "must be base64url of an uncompressed P-256 public key (65 bytes)",
            )
        })?;
    Ok(URL_SAFE_NO_PAD.encode(bytes))
}

/// A subscription's auth secret: base64url of 16 bytes. Returned re-encoded unpadded.
pub fn auth_secret(field: &str, value: &str) -> Result<String, FieldError> {
    let bytes = base64url(value)
        .filter(|b| b.len() == 16)
        .ok_or_else(|| FieldError::new(field, "invalid_key", "must be base64url of 16 bytes"))?;
    Ok(URL_SAFE_NO_PAD.encode(bytes))
}

/// An FCM registration token: 20 to 4096 characters of letters, digits, `-`, `_`, `:`.
pub fn fcm_token(field: &str, value: &str) -> Result<String, FieldError> {
    let ok = (20..=4096).contains(&value.len())
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b':'));
    if ok {
        Ok(value.to_owned())
    } else {
        Err(FieldError::new(
            field,
            "invalid_token",
            "must be 20 to 4096 characters of letters, digits, '-', '_' and ':'",
        ))
    }
}

/// An APNs device token: hexadecimal, 64 to 200 digits (32 bytes today). Returned in lower
/// case.
pub fn apns_token(field: &str, value: &str) -> Result<String, FieldError> {
    let ok = (64..=200).contains(&value.len())
        && value.len().is_multiple_of(2)
        && value.bytes().all(|b| b.is_ascii_hexdigit());
    if ok {
        Ok(value.to_ascii_lowercase())
    } else {
        Err(FieldError::new(
            field,
            "invalid_token",
            "must be 64 to 200 hexadecimal digits",
        ))
    }
}

/// An APNs topic (the app's bundle id): 1 to 255 visible ASCII characters.
pub fn apns_topic(field: &str, value: &str) -> Result<String, FieldError> {
    if (1..=255).contains(&value.len()) && value.bytes().all(|b| b.is_ascii_graphic()) {
        Ok(value.to_owned())
    } else {
        Err(FieldError::new(
            field,
            "invalid_topic",
            "must be 1 to 255 visible ASCII characters (the app's bundle id)",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_and_plain_http_endpoints_are_refused_unless_allowed() {
        for url in [
            "https://127.0.0.1/",
            "https://[::1]/",
            "https://10.0.0.1/",
            "https://192.168.1.1/x",
            "https://172.16.0.1/",
            "https://169.254.169.254/latest",
            "https://100.64.0.1/",
            "https://0.0.0.0/",
            "https://[fd00::1]/",
            "https://[fe80::1]/",
            "https://[::ffff:127.0.0.1]/",
            "https://0x7f.1/",
            "https://localhost/",
            "https://push.localhost./",
        ] {
            let err = push_endpoint("endpoint", url, false).unwrap_err();
            assert_eq!(err.code, "private_address", "{url}");
            assert!(push_endpoint("endpoint", url, true).is_ok(), "{url}");
        }
        assert_eq!(
            push_endpoint("endpoint", "http://example.com/", false)
                .unwrap_err()
                .code,
            "not_https"
        );
        assert!(push_endpoint("endpoint", "http://127.0.0.1:9/", true).is_ok());
        assert!(push_endpoint("endpoint", "https://fcm.googleapis.com/fcm/send/x", false).is_ok());
        assert!(push_endpoint("endpoint", "https://8.8.8.8/", false).is_ok());
        assert!(push_endpoint("endpoint", "ftp://example.com/", true).is_err());
        assert!(push_endpoint("endpoint", "https://u:p@example.com/", false).is_err());
    }

    #[test]
    fn keys_and_tokens_are_checked() {
        let point = p256::SecretKey::from_slice(&[7u8; 32])
            .unwrap()
            .public_key();
        use p256::elliptic_curve::sec1::ToEncodedPoint;
        let encoded = URL_SAFE_NO_PAD.encode(point.to_encoded_point(false).as_bytes());
        assert_eq!(p256dh("p", &encoded).unwrap(), encoded);
        let mut off_curve = point.to_encoded_point(false).as_bytes().to_vec();
        off_curve[64] ^= 1;
        assert!(p256dh("p", &URL_SAFE_NO_PAD.encode(off_curve)).is_err());
        assert!(p256dh("p", "AAAA").is_err());
        assert!(auth_secret("a", &URL_SAFE_NO_PAD.encode([1u8; 16])).is_ok());
        assert!(auth_secret("a", &URL_SAFE.encode([1u8; 16])).is_ok());
        assert!(auth_secret("a", &URL_SAFE_NO_PAD.encode([1u8; 15])).is_err());
        assert!(apns_token("t", &"Ab".repeat(32)).is_ok());
        assert!(apns_token("t", &"zz".repeat(32)).is_err());
        assert!(fcm_token("t", "abc:DEF-ghi_jkl0123456789").is_ok());
        assert!(fcm_token("t", "short").is_err());
        assert!(fcm_token("t", &format!("{}/", "a".repeat(30))).is_err());
        assert!(apns_topic("t", "com.example.app").is_ok());
        assert!(apns_topic("t", "").is_err());
    }
}
