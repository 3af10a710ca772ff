//! Who is an administrator, in one place: a member of the built-in Administrators group
//! (`store::groups::ADMINISTRATORS`, identified by its fixed id). Authorization decisions read the
//! membership from the database at request time, so a grant or removal applies at once; the
//! access token's `tmi_is_administrator` claim is the same rule evaluated at login (plus the admin
//! groups an identity provider grants through `TMI_ADMIN_SUBJECT_TYPE=group`), for clients only.
//! IO: reads group memberships through the `Store` trait.

use uuid::Uuid;

use crate::error::ApiError;
use crate::store::{GroupRecord, Store, groups};

/// The name of the built-in Administrators group (as it appears in a token's `groups`).
pub const GROUP_NAME: &str = "administrators";

/// Whether these TMI-managed groups include the Administrators group.
pub fn among(groups: &[GroupRecord]) -> bool {
    groups.iter().any(|g| g.internal_uuid == groups::ADMINISTRATORS)
}

/// Whether a token's group names grant administrator (the `tmi_is_administrator` claim).
pub fn named_in(names: &[String]) -> bool {
    names.iter().any(|n| n == GROUP_NAME)
}

/// Whether the user is an administrator now (read from the database).
pub async fn is_administrator(store: &dyn Store, user: Uuid) -> Result<bool, ApiError> {
    Ok(among(&store.user_groups(user).await?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group(id: Uuid, name: &str) -> GroupRecord {
        GroupRecord {
            internal_uuid: id,
            provider: "*".into(),
            group_name: name.into(),
            name: name.into(),
        }
    }

    #[test]
    fn the_administrators_group_is_recognised_by_its_id() {
        assert!(among(&[group(groups::ADMINISTRATORS, GROUP_NAME)]));
        // A look-alike name does not make a group the built-in one.
        assert!(!among(&[group(Uuid::new_v4(), GROUP_NAME)]));
        assert!(named_in(&["security-reviewers".into(), GROUP_NAME.into()]));
        assert!(!named_in(&["admins".into()]));
    }
}
