//! What tests can make the vault refuse: a permission (as an access policy
//! or an RBAC role assignment would), or the next requests with a status
//! such as 429 with `Retry-After`.

use crate::error::KvError;

/// A vault operation, as permissions name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FaultOp {
    /// `GET /keys/{n}[/{v}]`
    GetKey,
    /// `POST /keys/{n}/create`
    CreateKey,
    /// `PUT /keys/{n}`
    ImportKey,
    /// `PATCH /keys/{n}/{v}`
    UpdateKey,
    /// `DELETE /keys/{n}`
    DeleteKey,
    /// `GET /keys`
    ListKeys,
    /// `GET /keys/{n}/versions`
    ListKeyVersions,
    /// `POST …/wrapkey`
    WrapKey,
    /// `POST …/unwrapkey`
    UnwrapKey,
    /// `POST …/encrypt`
    Encrypt,
    /// `POST …/decrypt`
    Decrypt,
    /// `GET /deletedkeys/{n}`
    GetDeletedKey,
    /// `POST /deletedkeys/{n}/recover`
    RecoverKey,
    /// `DELETE /deletedkeys/{n}`
    PurgeKey,
    /// `GET /secrets/{n}[/{v}]`
    GetSecret,
    /// `PUT /secrets/{n}`
    SetSecret,
    /// `PATCH /secrets/{n}/{v}`
    UpdateSecret,
    /// `DELETE /secrets/{n}`
    DeleteSecret,
    /// `GET /secrets`
    ListSecrets,
    /// `GET /secrets/{n}/versions`
    ListSecretVersions,
    /// `GET /deletedsecrets/{n}`
    GetDeletedSecret,
    /// `POST /deletedsecrets/{n}/recover`
    RecoverSecret,
    /// `DELETE /deletedsecrets/{n}`
    PurgeSecret,
}

/// How a permission is missing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denial {
    /// The vault uses access policies, and the caller's lacks the permission
    /// (innererror `ForbiddenByPolicy`).
    Policy,
    /// The vault uses Azure RBAC, and no role grants the data action
    /// (innererror `ForbiddenByRbac`).
    Rbac,
}

impl FaultOp {
    /// `("keys" | "secrets", access-policy permission, RBAC data action)`.
    fn names(self) -> (&'static str, &'static str, &'static str) {
        use FaultOp::*;
        match self {
            GetKey => ("keys", "get", "keys/read"),
            CreateKey => ("keys", "create", "keys/create/action"),
            ImportKey => ("keys", "import", "keys/import/action"),
            UpdateKey => ("keys", "update", "keys/update/action"),
            DeleteKey => ("keys", "delete", "keys/delete"),
            ListKeys | ListKeyVersions => ("keys", "list", "keys/read"),
            WrapKey => ("keys", "wrapKey", "keys/wrap/action"),
            UnwrapKey => ("keys", "unwrapKey", "keys/unwrap/action"),
            Encrypt => ("keys", "encrypt", "keys/encrypt/action"),
            Decrypt => ("keys", "decrypt", "keys/decrypt/action"),
            GetDeletedKey => ("keys", "get", "deletedKeys/read"),
            RecoverKey => ("keys", "recover", "keys/recover/action"),
            PurgeKey => ("keys", "purge", "deletedKeys/delete"),
            GetSecret => ("secrets", "get", "secrets/getSecret/action"),
            SetSecret => ("secrets", "set", "secrets/setSecret/action"),
            UpdateSecret => ("secrets", "set", "secrets/update/action"),
            DeleteSecret => ("secrets", "delete", "secrets/delete"),
            ListSecrets | ListSecretVersions => ("secrets", "list", "secrets/readMetadata/action"),
            GetDeletedSecret => ("secrets", "get", "deletedSecrets/read"),
            RecoverSecret => ("secrets", "recover", "secrets/recover/action"),
            PurgeSecret => ("secrets", "purge", "deletedSecrets/delete"),
        }
    }
}

/// The 403 a denied operation gets. `caller` is the token's identity
/// (`appid=…;oid=…;iss=…`), `resource` the object's path (`keys/kek`).
pub(crate) fn denied(
    op: FaultOp,
    how: Denial,
    caller: &str,
    vault: &str,
    resource: &str,
) -> KvError {
    let (kind, permission, action) = op.names();
    match how {
        Denial::Policy => KvError::new(
            403,
            "Forbidden",
            format!(
                "The user, group or application '{caller}' does not have {kind} {permission} \
                 permission on key vault '{vault};location=westeurope'. For help resolving this \
                 issue, please see https://go.microsoft.com/fwlink/?linkid=2125287"
            ),
        )
        .with_inner("ForbiddenByPolicy"),
        Denial::Rbac => KvError::new(
            403,
            "Forbidden",
            format!(
                "Caller is not authorized to perform action on resource.\r\nIf role assignments, \
                 deny assignments or role definitions were changed recently, please observe \
                 propagation time.\r\nCaller: {caller}\r\nAction: \
                 'Microsoft.KeyVault/vaults/{action}'\r\nResource: \
                 '/subscriptions/00000000-0000-0000-0000-000000000000/resourcegroups/flr-test/\
                 providers/microsoft.keyvault/vaults/{vault}/{resource}'\r\nAssignment: (not \
                 found)\r\nDenyAssignmentId: null\r\nDecisionReason: null \r\nVault: \
                 {vault};location=westeurope\r\n"
            ),
        )
        .with_inner("ForbiddenByRbac"),
    }
}

/// The answer an injected failure gets.
pub(crate) fn failure(status: u16) -> KvError {
    let (code, message) = match status {
        429 => (
            "Throttled",
            "Request was not processed because too many requests were received. Reason: A1",
        ),
        503 => (
            "ServiceUnavailable",
            "The service is temporarily unavailable.",
        ),
        500 => ("InternalServerError", "An unexpected error occurred."),
        _ => ("InjectedFault", "A failure injected by the test."),
    };
    KvError::new(status, code, message)
}
