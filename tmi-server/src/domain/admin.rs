//! Who is an administrator, in one place: a member of the built-in Administrators group
//! (`store::groups::ADMINISTRATORS`, identified by its fixed id), or of an identity provider's
//! group that `TMI_ADMIN_SUBJECT_TYPE=group` names (memberships the provider asserted at the
//! user's last sign-in, `Store::set_provider_groups`). Authorization decisions read the
//! membership from the database at request time, so a grant or removal applies at once; the
//! access token's `tmi_is_administrator` claim is the same rule evaluated at login (plus the admin
//! groups an identity provider grants through `TMI_ADMIN_SUBJECT_TYPE=group`), for clients only.
//! IO: reads group memberships through the `Store` trait.

use uuid::Uuid;

use crate::config::AdminBootstrap;
use crate::error::ApiError;
use crate::store::{GroupRecord, Store, groups};

/// The name of the built-in Administrators group (as it appears in a token's `groups`).
pub const GROUP_NAME: &str = "administrators";

/// Whether these groups of a user (TMI's and their provider's) make them an administrator.
pub fn among(groups: &[GroupRecord], admins: &[AdminBootstrap]) -> bool {
    groups.iter().any(|g| {
        g.internal_uuid == groups::ADMINISTRATORS
            || admins.iter().any(|a| {
                a.subject_type == "group"
                    && a.provider == g.provider
                    && a.group_name.as_deref() == Some(g.group_name.as_str())
            })
    })
}

/// Whether a token's group names grant administrator (the `tmi_is_administrator` claim).
pub fn named_in(names: &[String]) -> bool {
    names.iter().any(|n| n == GROUP_NAME)
}

/// Whether the user is an administrator now (read from the database).
pub async fn is_administrator(
    store: &dyn Store,
    admins: &[AdminBootstrap],
    user: Uuid,
) -> Result<bool, ApiError> {
    Ok(among(&store.user_groups(user).await?, admins))
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
        assert!(among(&[group(groups::ADMINISTRATORS, GROUP_NAME)], &[]));
        // A look-alike name does not make a group the built-in one.
        assert!(!among(&[group(Uuid::new_v4(), GROUP_NAME)], &[]));
        // A provider's group named by TMI_ADMIN_SUBJECT_TYPE=group does, for that provider only.
        let by_group = AdminBootstrap {
            provider: "kc".into(),
            provider_id: None,
            email: None,
            group_name: Some("tmi-admins".into()),
            subject_type: "group".into(),
        };
        let mut g = group(Uuid::new_v4(), "tmi-admins");
        g.provider = "kc".into();
        assert!(among(std::slice::from_ref(&g), std::slice::from_ref(&by_group)));
        g.provider = "github".into();
        assert!(!among(&[g], &[by_group]));
        assert!(named_in(&["security-reviewers".into(), GROUP_NAME.into()]));
        assert!(!named_in(&["admins".into()]));
    }
}
