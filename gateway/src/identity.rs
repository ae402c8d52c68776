//! Who is asking: bearer JWTs verified with the configured key (an HS256
//! secret, or an RS256/ES256 public key), or nobody checked at all when no
//! key is configured (the open mode: everyone is an operator).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use mallbots_contracts::{Actor, Role};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::config::Settings;

/// Seconds of clock difference tolerated on `exp` and `nbf`.
const LEEWAY_SECS: u64 = 5;

/// The claims the gateway reads.
#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    sub: String,
    role: String,
    exp: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    nbf: Option<u64>,
}

/// A request's principal, as its token (or the open mode) says.
#[derive(Clone, Debug, PartialEq)]
pub struct Identity {
    /// `None`: no token (anonymous).
    pub actor: Option<Actor>,
    /// When the token stops being valid (seconds since the epoch).
    pub expires_at: Option<u64>,
}

impl Identity {
    pub const ANONYMOUS: Identity = Identity {
        actor: None,
        expires_at: None,
    };

    /// How long until the token expires (zero if it has).
    pub fn remaining(&self) -> Option<Duration> {
        let exp = Duration::from_secs(self.expires_at?);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        Some(exp.saturating_sub(now))
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("send the token as `Bearer <token>`")]
    NotBearer,
    #[error("send one Authorization header")]
    Several,
    #[error("cannot sign a token: {0}")]
    Signing(String),
    #[error("the token is not valid: {0}")]
    Invalid(String),
    #[error("cannot read the key in {path}: {reason}")]
    Key { path: String, reason: String },
}

enum Mode {
    Open,
    Verify {
        key: Box<DecodingKey>,
        validation: Box<Validation>,
    },
}

/// The gateway's verifier.
pub struct Auth {
    mode: Mode,
}

impl Auth {
    /// From the settings: open when neither a secret nor a public key is set.
    pub fn from_settings(settings: &Settings) -> Result<Auth, AuthError> {
        let (key, algorithm) = if let Some(path) = &settings.auth_jwt_public_key {
            let key_error = |reason: String| AuthError::Key {
                path: path.display().to_string(),
                reason,
            };
            let pem = std::fs::read(path).map_err(|e| key_error(e.to_string()))?;
            match DecodingKey::from_rsa_pem(&pem) {
                Ok(key) => (key, Algorithm::RS256),
                Err(rsa) => {
                    let key = DecodingKey::from_ec_pem(&pem).map_err(|ec| {
                        key_error(format!("not an RSA key ({rsa}) nor an EC key ({ec})"))
                    })?;
                    (key, Algorithm::ES256)
                }
            }
        } else if let Some(secret) = &settings.auth_jwt_secret {
            (
                DecodingKey::from_secret(secret.as_bytes()),
                Algorithm::HS256,
            )
        } else {
            return Ok(Auth { mode: Mode::Open });
        };
        let mut validation = Validation::new(algorithm);
        validation.leeway = LEEWAY_SECS;
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp", "sub"]);
        match &settings.auth_jwt_audience {
            Some(aud) => validation.set_audience(&[aud]),
            None => validation.validate_aud = false,
        }
        if let Some(iss) = &settings.auth_jwt_issuer {
            validation.set_issuer(&[iss]);
        }
        Ok(Auth {
            mode: Mode::Verify {
                key: Box::new(key),
                validation: Box::new(validation),
            },
        })
    }

    pub fn is_open(&self) -> bool {
        matches!(self.mode, Mode::Open)
    }

    /// The identity an `Authorization` value (`Bearer <jwt>`) proves.
    pub fn identify(&self, authorization: Option<&str>) -> Result<Identity, AuthError> {
        let (key, validation) = match &self.mode {
            Mode::Open => {
                return Ok(Identity {
                    actor: Some(Actor::OPEN),
                    expires_at: None,
                });
            }
            Mode::Verify { key, validation } => (key, validation),
        };
        let Some(authorization) = authorization else {
            return Ok(Identity::ANONYMOUS);
        };
        // The scheme is case-insensitive (RFC 9110); the token is one word.
        let token = authorization
            .trim()
            .split_once(' ')
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim())
            .filter(|t| !t.is_empty() && !t.contains(' '))
            .ok_or(AuthError::NotBearer)?;
        let claims = jsonwebtoken::decode::<Claims>(token, key, validation)
            .map_err(|e| AuthError::Invalid(reason(e.kind())))?
            .claims;
        let id = Uuid::try_parse(&claims.sub)
            .map_err(|_| AuthError::Invalid("its subject is not a UUID".into()))?;
        let role = Role::from_claim(&claims.role)
            .ok_or_else(|| AuthError::Invalid(format!("{:?} is not a role", claims.role)))?;
        Ok(Identity {
            actor: Some(Actor { id, role }),
            expires_at: Some(claims.exp),
        })
    }
}

/// Why a token was refused, in a client's words (never the library's types).
fn reason(kind: &jsonwebtoken::errors::ErrorKind) -> String {
    use jsonwebtoken::errors::ErrorKind as K;
    match kind {
        K::ExpiredSignature => "it has expired",
        K::ImmatureSignature => "it is not valid yet",
        K::InvalidSignature => "its signature does not match",
        K::InvalidAlgorithm | K::InvalidAlgorithmName => "it is signed with another algorithm",
        K::InvalidIssuer => "it is from another issuer",
        K::InvalidAudience => "it is for another audience",
        K::MissingRequiredClaim(_) => "it lacks a required claim (sub, exp)",
        _ => "it cannot be read",
    }
    .to_owned()
}

/// A token for `actor`, valid for `ttl`, signed with `secret` (HS256): what
/// `mallbots token` prints.
pub fn mint(secret: &str, actor: Actor, ttl: Duration) -> Result<String, AuthError> {
    let claims = Claims {
        sub: actor.id.to_string(),
        role: actor.role.as_str().to_owned(),
        exp: now() + ttl.as_secs(),
        nbf: None,
    };
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .map_err(|e| AuthError::Signing(e.to_string()))
}

/// A duration such as `90s`, `30m`, `1h` or `7d` (a bare number is seconds).
pub fn parse_ttl(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => text.split_at(i),
        None => (text, "s"),
    };
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 90s, 30m, 1h or 7d"))?;
    let unit = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        _ => {
            return Err(format!(
                "{text:?} is not a duration like 90s, 30m, 1h or 7d"
            ));
        }
    };
    Ok(Duration::from_secs(n.saturating_mul(unit)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        settings: Settings,
    }

    fn auth(args: &[&str]) -> Auth {
        let mut all = vec!["test"];
        all.extend(args);
        Auth::from_settings(&Cli::parse_from(all).settings).expect("settings")
    }

    #[test]
    fn without_a_key_everyone_is_an_operator() {
        let open = auth(&[]);
        assert!(open.is_open());
        let who = open.identify(None).unwrap();
        assert_eq!(who.actor, Some(Actor::OPEN));
    }

    #[test]
    fn a_minted_token_proves_its_actor_and_a_forged_one_nothing() {
        let auth = auth(&["--auth-jwt-secret", "s3cret"]);
        let actor = Actor {
            id: Uuid::now_v7(),
            role: Role::Bot,
        };
        let token = mint("s3cret", actor, Duration::from_secs(60)).unwrap();
        let who = auth.identify(Some(&format!("Bearer {token}"))).unwrap();
        assert_eq!(who.actor, Some(actor));
        assert!(who.remaining().unwrap() <= Duration::from_secs(60));
        let forged = mint("other", actor, Duration::from_secs(60)).unwrap();
        assert!(matches!(
            auth.identify(Some(&format!("Bearer {forged}"))),
            Err(AuthError::Invalid(_))
        ));
        assert!(matches!(
            auth.identify(Some(&token)),
            Err(AuthError::NotBearer)
        ));
        let shouted = auth.identify(Some(&format!("BEARER {token}"))).unwrap();
        assert_eq!(shouted.actor, Some(actor));
        assert_eq!(auth.identify(None).unwrap(), Identity::ANONYMOUS);
    }

    #[test]
    fn an_expired_token_is_refused() {
        let auth = auth(&["--auth-jwt-secret", "s3cret"]);
        let claims = Claims {
            sub: Uuid::now_v7().to_string(),
            role: "customer".into(),
            exp: now() - 2 * LEEWAY_SECS,
            nbf: None,
        };
        let token = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(b"s3cret"),
        )
        .unwrap();
        let refused = auth.identify(Some(&format!("Bearer {token}")));
        assert!(matches!(refused, Err(AuthError::Invalid(r)) if r == "it has expired"));
    }

    #[test]
    fn ttls_read_as_people_write_them() {
        assert_eq!(parse_ttl("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_ttl("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_ttl("7d"), Ok(Duration::from_secs(7 * 86400)));
        assert_eq!(parse_ttl("45"), Ok(Duration::from_secs(45)));
        assert!(parse_ttl("1y").is_err());
        assert!(parse_ttl("h").is_err());
    }
}
