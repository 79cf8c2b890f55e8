//! Outgoing email (invitations), when the operator configures SMTP. Without it, invitation
//! links are only returned to the inviter, who passes them on.

use lettre::message::header::{ContentTransferEncoding, ContentType};
use lettre::message::{Body, Mailbox, SinglePart};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

/// How long one delivery attempt may take before the invitation is returned without it.
const SEND_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// An SMTP relay and the sender address.
pub struct Mailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
}

impl std::fmt::Debug for Mailer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The transport holds the relay's credentials.
        f.write_str("Mailer(…)")
    }
}

impl Mailer {
    /// `smtp://user:pass@host:587?tls=required` (STARTTLS), `smtps://…` (TLS), or `smtp://host:25`
    /// (plain, for a relay on the same host); `from` like `hdls <hdls@example.com>`.
    pub fn from_url(url: &str, from: &str) -> anyhow::Result<Mailer> {
        crate::net::fetch::install_tls_provider();
        let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(url)
            .map_err(|_| {
                anyhow::anyhow!("the SMTP URL is not valid (expected smtp:// or smtps://)")
            })?
            .timeout(Some(SEND_TIMEOUT))
            .build();
        let from = from
            .parse()
            .map_err(|_| anyhow::anyhow!("the SMTP sender {from:?} is not a valid address"))?;
        Ok(Mailer { transport, from })
    }

    /// Sends an invitation. Errors are described without the relay's credentials.
    pub async fn send_invitation(
        &self,
        to: &str,
        workspace: &str,
        role: &str,
        link: &str,
        expires: &str,
    ) -> Result<(), String> {
        let body = format!(
            "You have been invited to join the workspace \"{workspace}\" on hdls as {role}.\n\n\
             Open this link to accept (it works once, until {expires}):\n\n{link}\n\n\
             If you did not expect this, ignore this email.\n"
        );
        self.send(to, format!("Join {workspace} on hdls"), body)
            .await
    }

    /// Sends a customer invitation: an account to follow one's own support tickets.
    pub async fn send_customer_invitation(
        &self,
        to: &str,
        workspace: &str,
        link: &str,
        expires: &str,
    ) -> Result<(), String> {
        let body = format!(
            "{workspace} invites you to a customer account for their support: you can then open \
             and follow your own tickets on the web, or from an MCP client.\n\n\
             Open this link to set it up (it works once, until {expires}):\n\n{link}\n\n\
             If you did not expect this, ignore this email.\n"
        );
        self.send(to, format!("Your {workspace} support account"), body)
            .await
    }

    async fn send(&self, to: &str, subject: String, body: String) -> Result<(), String> {
        let to: Mailbox = to
            .parse()
            .map_err(|_| "the address is not valid".to_owned())?;
        // Quoted-printable keeps the link readable in the raw message whatever the
        // workspace name's characters.
        let body = Body::new_with_encoding(body, ContentTransferEncoding::QuotedPrintable)
            .map_err(|_| "could not encode the message".to_owned())?;
        let message = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(subject)
            .singlepart(
                SinglePart::builder()
                    .header(ContentType::TEXT_PLAIN)
                    .body(body),
            )
            .map_err(|e| format!("could not build the message: {e}"))?;
        match tokio::time::timeout(SEND_TIMEOUT, self.transport.send(message)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(if e.is_permanent() {
                "the mail server refused the message".to_owned()
            } else {
                "the mail server could not be reached or failed".to_owned()
            }),
            Err(_) => Err("the mail server did not answer in time".to_owned()),
        }
    }
}
