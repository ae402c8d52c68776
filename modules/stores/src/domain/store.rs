use mallbots_platform::aggregate::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::error::StoresError;
use super::values::{StoreLocation, StoreName};

/// A store of the mall. `Default` is a store not created yet.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Store {
    pub created: bool,
    pub name: String,
    pub location: String,
    pub participating: bool,
    /// The store owner who created it (none: only operators manage it).
    #[serde(default)]
    pub owner: Option<Uuid>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum StoreEvent {
    StoreCreated {
        name: String,
        location: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        owner: Option<Uuid>,
    },
    StoreParticipationEnabled,
    StoreParticipationDisabled,
    StoreRebranded {
        name: String,
    },
}

impl DomainEvent for StoreEvent {
    fn event_type(&self) -> &'static str {
        match self {
            StoreEvent::StoreCreated { .. } => "StoreCreated",
            StoreEvent::StoreParticipationEnabled => "StoreParticipationEnabled",
            StoreEvent::StoreParticipationDisabled => "StoreParticipationDisabled",
            StoreEvent::StoreRebranded { .. } => "StoreRebranded",
        }
    }
}

impl Aggregate for Store {
    const STREAM_TYPE: &'static str = "Store";
    type Event = StoreEvent;

    fn apply(&mut self, event: &StoreEvent) {
        match event {
            StoreEvent::StoreCreated {
                name,
                location,
                owner,
            } => {
                self.created = true;
                self.owner = *owner;
                self.name = name.clone();
                self.location = location.clone();
            }
            StoreEvent::StoreParticipationEnabled => self.participating = true,
            StoreEvent::StoreParticipationDisabled => self.participating = false,
            StoreEvent::StoreRebranded { name } => self.name = name.clone(),
        }
    }
}

impl Store {
    fn existing(&self) -> Result<&Self, StoresError> {
        if self.created {
            Ok(self)
        } else {
            Err(StoresError::StoreNotFound)
        }
    }

    pub fn create(
        &self,
        name: &str,
        location: &str,
        owner: Option<Uuid>,
    ) -> Result<Vec<StoreEvent>, StoresError> {
        let name = StoreName::parse(name)?;
        let location = StoreLocation::parse(location)?;
        if self.created {
            return Err(StoresError::StoreExists);
        }
        Ok(vec![StoreEvent::StoreCreated {
            name: name.as_str().to_owned(),
            location: location.as_str().to_owned(),
            owner,
        }])
    }

    /// Already participating is fine: nothing changes.
    pub fn enable_participation(&self) -> Result<Vec<StoreEvent>, StoresError> {
        let store = self.existing()?;
        Ok(if store.participating {
            vec![]
        } else {
            vec![StoreEvent::StoreParticipationEnabled]
        })
    }

    pub fn disable_participation(&self) -> Result<Vec<StoreEvent>, StoresError> {
        let store = self.existing()?;
        Ok(if store.participating {
            vec![StoreEvent::StoreParticipationDisabled]
        } else {
            vec![]
        })
    }

    pub fn rebrand(&self, name: &str) -> Result<Vec<StoreEvent>, StoresError> {
        let name = StoreName::parse(name)?;
        let store = self.existing()?;
        Ok(if store.name == name.as_str() {
            vec![]
        } else {
            vec![StoreEvent::StoreRebranded {
                name: name.as_str().to_owned(),
            }]
        })
    }
}
