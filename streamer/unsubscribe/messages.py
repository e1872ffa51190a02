"""The unsubscribe page's words, per locale (same keys everywhere; checked at import)."""

from __future__ import annotations

MESSAGES: dict[str, dict[str, str]] = {
    "en": {
        "confirm_title": "Unsubscribe from these emails?",
        "confirm_body": "You will no longer receive this kind of notice from us.",
        "confirm_note": "Emails you need to use your account, such as address verification and password "
        "resets, will still reach you.",
        "button": "Unsubscribe",
        "done_title": "You're unsubscribed",
        "done_body": "You will no longer receive this kind of notice from us.",
        "invalid_title": "This link is not valid",
        "invalid_body": "Please use the unsubscribe link from a recent email, without changing it.",
        "error_title": "Something went wrong",
        "error_body": "We couldn't save your choice. Please try again in a few minutes.",
    },
    "fr": {
        "confirm_title": "Vous désabonner de ces e-mails ?",
        "confirm_body": "Vous ne recevrez plus ce type de notification de notre part.",
        "confirm_note": "Les e-mails nécessaires à l’utilisation de votre compte, comme la vérification de "
        "votre adresse ou la réinitialisation de votre mot de passe, vous parviendront toujours.",
        "button": "Me désabonner",
        "done_title": "Votre désabonnement est enregistré",
        "done_body": "Vous ne recevrez plus ce type de notification de notre part.",
        "invalid_title": "Ce lien n’est pas valide",
        "invalid_body": "Utilisez le lien de désabonnement d’un e-mail récent, sans le modifier.",
        "error_title": "Un problème est survenu",
        "error_body": "Nous n’avons pas pu enregistrer votre choix. Veuillez réessayer dans quelques minutes.",
    },
    "de": {
        "confirm_title": "Diese E-Mails abbestellen?",
        "confirm_body": "Sie erhalten diese Art von Benachrichtigung dann nicht mehr von uns.",
        "confirm_note": "E-Mails, die Sie für Ihr Konto brauchen, etwa zur Bestätigung Ihrer Adresse oder zum "
        "Zurücksetzen Ihres Passworts, erhalten Sie weiterhin.",
        "button": "Abbestellen",
        "done_title": "Sie haben diese E-Mails abbestellt",
        "done_body": "Sie erhalten diese Art von Benachrichtigung nicht mehr von uns.",
        "invalid_title": "Dieser Link ist ungültig",
        "invalid_body": "Bitte verwenden Sie den Abmeldelink aus einer aktuellen E-Mail, ohne ihn zu ändern.",
        "error_title": "Etwas ist schiefgelaufen",
        "error_body": "Wir konnten Ihre Auswahl nicht speichern. Bitte versuchen Sie es in einigen Minuten erneut.",
    },
    "es": {
        "confirm_title": "¿Quieres darte de baja de estos correos?",
        "confirm_body": "Dejarás de recibir este tipo de aviso de nuestra parte.",
        "confirm_note": "Los correos que necesitas para usar tu cuenta, como la verificación de tu dirección o "
        "el restablecimiento de tu contraseña, te seguirán llegando.",
        "button": "Darme de baja",
        "done_title": "Te has dado de baja",
        "done_body": "Ya no recibirás este tipo de aviso de nuestra parte.",
        "invalid_title": "Este enlace no es válido",
        "invalid_body": "Usa el enlace para darte de baja de un correo reciente, sin modificarlo.",
        "error_title": "Algo ha salido mal",
        "error_body": "No hemos podido guardar tu elección. Vuelve a intentarlo dentro de unos minutos.",
    },
}

assert all(set(words) == set(MESSAGES["en"]) for words in MESSAGES.values()), "unsubscribe MESSAGES keys differ"
