//! Who sends a command: the actor every public command carries in its
//! envelope, so the module that owns the data decides, not only the gateway.

use std::fmt;
use std::str::FromStr;

use uuid::Uuid;

/// The envelope header with the command's actor, as `<role>:<uuid>`. Events
/// a command causes keep it, so the event store says who did what.
pub const HEADER_ACTOR: &str = "x-actor";

/// What a principal is. The first four come from tokens; `System` is the
/// platform itself (the create-order saga), never a token's role.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    Customer,
    StoreOwner,
    Bot,
    Operator,
    System,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Customer => "customer",
            Role::StoreOwner => "store_owner",
            Role::Bot => "bot",
            Role::Operator => "operator",
            Role::System => "system",
        }
    }

    /// A role a token may claim.
    pub fn from_claim(claim: &str) -> Option<Role> {
        match claim.parse() {
            Ok(Role::System) | Err(_) => None,
            Ok(role) => Some(role),
        }
    }
}

impl FromStr for Role {
    type Err = ();

    fn from_str(s: &str) -> Result<Self, ()> {
        [
            Role::Customer,
            Role::StoreOwner,
            Role::Bot,
            Role::Operator,
            Role::System,
        ]
        .into_iter()
        .find(|r| r.as_str() == s)
        .ok_or(())
    }
}

/// A principal: the token's `sub` and `role`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Actor {
    pub id: Uuid,
    pub role: Role,
}

impl Actor {
    /// Everyone while the gateway runs without a key (open mode).
    pub const OPEN: Actor = Actor {
        id: Uuid::nil(),
        role: Role::Operator,
    };
    /// The platform's own commands (the saga's).
    pub const SYSTEM: Actor = Actor {
        id: Uuid::nil(),
        role: Role::System,
    };

    /// Operators and the platform may act on anything.
    pub fn is_trusted(&self) -> bool {
        matches!(self.role, Role::Operator | Role::System)
    }

    /// Whether this actor may act on what `owner` owns: its owner (in the
    /// given role) or a trusted actor.
    pub fn may_act_for(&self, role: Role, owner: Option<Uuid>) -> bool {
        self.is_trusted() || (self.role == role && owner == Some(self.id))
    }

    /// The header value: `<role>:<uuid>`.
    pub fn header(&self) -> String {
        format!("{}:{}", self.role.as_str(), self.id)
    }

    /// An actor from its header value.
    pub fn parse(header: &str) -> Option<Actor> {
        let (role, id) = header.split_once(':')?;
        Some(Actor {
            role: role.parse().ok()?,
            id: Uuid::try_parse(id).ok()?,
        })
    }
}

impl fmt::Display for Actor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.header())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_header_reads_back_as_its_actor() {
        let actor = Actor {
            id: Uuid::now_v7(),
            role: Role::StoreOwner,
        };
        assert_eq!(Actor::parse(&actor.header()), Some(actor));
        assert_eq!(Actor::parse("store_owner"), None);
        assert_eq!(
            Actor::parse("king:00000000-0000-0000-0000-000000000000"),
            None
        );
    }

    #[test]
    fn tokens_cannot_claim_the_platforms_role() {
        assert_eq!(Role::from_claim("system"), None);
        assert_eq!(Role::from_claim("bot"), Some(Role::Bot));
        assert_eq!(Role::from_claim("Operator"), None);
    }

    #[test]
    fn only_the_owner_in_its_role_or_a_trusted_actor_may_act() {
        let owner = Uuid::now_v7();
        let customer = Actor {
            id: owner,
            role: Role::Customer,
        };
        assert!(customer.may_act_for(Role::Customer, Some(owner)));
        assert!(!customer.may_act_for(Role::Bot, Some(owner)));
        assert!(!customer.may_act_for(Role::Customer, Some(Uuid::now_v7())));
        assert!(!customer.may_act_for(Role::Customer, None));
        assert!(Actor::OPEN.may_act_for(Role::Customer, Some(owner)));
        assert!(Actor::SYSTEM.may_act_for(Role::Bot, None));
    }
}
