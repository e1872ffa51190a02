"""The form's words: translations for each supported locale, and which locale a page is shown in."""

from __future__ import annotations

import string

from streamer.locale import normalize_locale

SUPPORTED_LOCALES = ("en", "fr", "de", "es")
LANGUAGE_NAMES = {"en": "English", "fr": "Français", "de": "Deutsch", "es": "Español"}

MESSAGES: dict[str, dict[str, str]] = {
    "en": {
        "title": "Reset your password",
        "intro": "Enter the email address you use to sign in. We'll email you a link to choose a new password.",
        "intro_new_password": "Enter the email address you use to sign in and choose a new password. "
        "We'll email you a link to finish resetting your password.",
        "email_label": "Email address",
        "password_label": "New password",
        "password_hint": "At least {n} characters.",
        "confirm_label": "Confirm new password",
        "submit": "Send reset link",
        "error_prefix": "Error: ",
        "error_summary": "Please check what you entered",
        "err_email": "Enter a valid email address, like name@example.com.",
        "err_password_short": "Your new password must be at least {n} characters long.",
        "err_password_long": "Your new password must be at most {n} characters long.",
        "err_password_mismatch": "The two passwords don't match. Enter the same password twice.",
        "sent_title": "Check your email",
        "sent_body": "If an account exists for that address, we've sent a link to reset your password.",
        "sent_hint": "It can take a few minutes to arrive. If you don't see it, check your spam folder.",
        "sent_again": "Send another link",
        "rate_title": "Too many attempts",
        "rate_body": "For your security, we limit how often a password reset can be requested. "
        "Please wait {wait} and try again.",
        "csrf_title": "This page has expired",
        "csrf_body": "For your security, the form can only be used for a limited time. Open it again and resubmit.",
        "csrf_hint": "If this keeps happening, check that your browser accepts cookies.",
        "invalid_title": "We couldn't read that request",
        "invalid_body": "Please open the form again and resubmit it.",
        "back": "Open the form again",
        "notfound_title": "Page not found",
        "notfound_body": "This password reset page doesn't exist or isn't enabled.",
        "language": "Language",
    },
    "fr": {
        "title": "Réinitialiser votre mot de passe",
        "intro": "Saisissez l’adresse e-mail que vous utilisez pour vous connecter. Nous vous enverrons "
        "un lien pour choisir un nouveau mot de passe.",
        "intro_new_password": "Saisissez l’adresse e-mail que vous utilisez pour vous connecter et choisissez "
        "un nouveau mot de passe. Nous vous enverrons un lien pour terminer la "
        "réinitialisation.",
        "email_label": "Adresse e-mail",
        "password_label": "Nouveau mot de passe",
        "password_hint": "Au moins {n} caractères.",
        "confirm_label": "Confirmez le nouveau mot de passe",
        "submit": "Envoyer le lien de réinitialisation",
        "error_prefix": "Erreur : ",
        "error_summary": "Vérifiez les informations saisies",
        "err_email": "Saisissez une adresse e-mail valide, par exemple nom@exemple.fr.",
        "err_password_short": "Le nouveau mot de passe doit contenir au moins {n} caractères.",
        "err_password_long": "Le nouveau mot de passe ne peut pas dépasser {n} caractères.",
        "err_password_mismatch": "Les deux mots de passe ne correspondent pas. Saisissez deux fois le même.",
        "sent_title": "Consultez votre messagerie",
        "sent_body": "Si un compte existe pour cette adresse, nous vous avons envoyé un lien pour "
        "réinitialiser votre mot de passe.",
        "sent_hint": "Il peut mettre quelques minutes à arriver. Si vous ne le trouvez pas, "
        "vérifiez vos courriers indésirables.",
        "sent_again": "Envoyer un nouveau lien",
        "rate_title": "Trop de tentatives",
        "rate_body": "Pour votre sécurité, le nombre de demandes de réinitialisation est limité. "
        "Veuillez patienter {wait} avant de réessayer.",
        "csrf_title": "Cette page a expiré",
        "csrf_body": "Pour votre sécurité, le formulaire n’est valable que pendant une durée limitée. "
        "Rouvrez-le et envoyez-le de nouveau.",
        "csrf_hint": "Si le problème persiste, vérifiez que votre navigateur accepte les cookies.",
        "invalid_title": "Nous n’avons pas pu lire cette demande",
        "invalid_body": "Veuillez rouvrir le formulaire et l’envoyer de nouveau.",
        "back": "Rouvrir le formulaire",
        "notfound_title": "Page introuvable",
        "notfound_body": "Cette page de réinitialisation du mot de passe n’existe pas ou n’est pas activée.",
        "language": "Langue",
    },
    "de": {
        "title": "Passwort zurücksetzen",
        "intro": "Geben Sie die E-Mail-Adresse ein, mit der Sie sich anmelden. Wir senden Ihnen einen Link, "
        "über den Sie ein neues Passwort festlegen können.",
        "intro_new_password": "Geben Sie die E-Mail-Adresse ein, mit der Sie sich anmelden, und wählen Sie ein "
        "neues Passwort. Wir senden Ihnen einen Link, mit dem Sie das Zurücksetzen "
        "abschließen.",
        "email_label": "E-Mail-Adresse",
        "password_label": "Neues Passwort",
        "password_hint": "Mindestens {n} Zeichen.",
        "confirm_label": "Neues Passwort bestätigen",
        "submit": "Link zum Zurücksetzen senden",
        "error_prefix": "Fehler: ",
        "error_summary": "Bitte überprüfen Sie Ihre Eingaben",
        "err_email": "Geben Sie eine gültige E-Mail-Adresse ein, z. B. name@beispiel.de.",
        "err_password_short": "Das neue Passwort muss mindestens {n} Zeichen lang sein.",
        "err_password_long": "Das neue Passwort darf höchstens {n} Zeichen lang sein.",
        "err_password_mismatch": "Die beiden Passwörter stimmen nicht überein. Geben Sie zweimal dasselbe "
        "Passwort ein.",
        "sent_title": "Bitte prüfen Sie Ihr Postfach",
        "sent_body": "Falls ein Konto mit dieser Adresse existiert, haben wir Ihnen einen Link zum "
        "Zurücksetzen Ihres Passworts gesendet.",
        "sent_hint": "Es kann einige Minuten dauern, bis die E-Mail ankommt. Sehen Sie bitte auch in Ihrem "
        "Spam-Ordner nach.",
        "sent_again": "Neuen Link anfordern",
        "rate_title": "Zu viele Versuche",
        "rate_body": "Zu Ihrer Sicherheit ist die Zahl der Anfragen zum Zurücksetzen begrenzt. "
        "Bitte warten Sie {wait} und versuchen Sie es dann erneut.",
        "csrf_title": "Diese Seite ist abgelaufen",
        "csrf_body": "Aus Sicherheitsgründen ist das Formular nur zeitlich begrenzt gültig. Öffnen Sie es "
        "erneut und senden Sie es noch einmal ab.",
        "csrf_hint": "Falls das Problem weiterhin besteht, prüfen Sie, ob Ihr Browser Cookies zulässt.",
        "invalid_title": "Diese Anfrage konnte nicht gelesen werden",
        "invalid_body": "Bitte öffnen Sie das Formular erneut und senden Sie es noch einmal ab.",
        "back": "Formular erneut öffnen",
        "notfound_title": "Seite nicht gefunden",
        "notfound_body": "Diese Seite zum Zurücksetzen des Passworts existiert nicht oder ist nicht aktiviert.",
        "language": "Sprache",
    },
    "es": {
        "title": "Restablecer la contraseña",
        "intro": "Introduzca la dirección de correo electrónico con la que inicia sesión. Le enviaremos un "
        "enlace para elegir una nueva contraseña.",
        "intro_new_password": "Introduzca la dirección de correo electrónico con la que inicia sesión y elija "
        "una nueva contraseña. Le enviaremos un enlace para completar el "
        "restablecimiento.",
        "email_label": "Correo electrónico",
        "password_label": "Nueva contraseña",
        "password_hint": "Al menos {n} caracteres.",
        "confirm_label": "Confirme la nueva contraseña",
        "submit": "Enviar enlace de restablecimiento",
        "error_prefix": "Error: ",
        "error_summary": "Revise los datos introducidos",
        "err_email": "Introduzca una dirección de correo electrónico válida, por ejemplo, nombre@ejemplo.com.",
        "err_password_short": "La nueva contraseña debe tener al menos {n} caracteres.",
        "err_password_long": "La nueva contraseña no puede tener más de {n} caracteres.",
        "err_password_mismatch": "Las contraseñas no coinciden. Escriba la misma contraseña dos veces.",
        "sent_title": "Revise su correo",
        "sent_body": "Si existe una cuenta con esa dirección, le hemos enviado un enlace para restablecer "
        "su contraseña.",
        "sent_hint": "Puede tardar unos minutos en llegar. Si no lo ve, revise también la carpeta de spam.",
        "sent_again": "Enviar otro enlace",
        "rate_title": "Demasiados intentos",
        "rate_body": "Por su seguridad, limitamos la frecuencia con la que se puede solicitar un "
        "restablecimiento. Espere {wait} y vuelva a intentarlo.",
        "csrf_title": "Esta página ha caducado",
        "csrf_body": "Por su seguridad, el formulario solo es válido durante un tiempo limitado. "
        "Vuelva a abrirlo y envíelo de nuevo.",
        "csrf_hint": "Si el problema continúa, compruebe que su navegador acepta cookies.",
        "invalid_title": "No hemos podido leer la solicitud",
        "invalid_body": "Vuelva a abrir el formulario y envíelo de nuevo.",
        "back": "Volver a abrir el formulario",
        "notfound_title": "Página no encontrada",
        "notfound_body": "Esta página de restablecimiento de contraseña no existe o no está habilitada.",
        "language": "Idioma",
    },
}


def _placeholders(text: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(text) if name}


def _check_messages() -> None:
    reference = MESSAGES["en"]
    for locale in SUPPORTED_LOCALES:
        strings = MESSAGES[locale]
        if set(strings) != set(reference):
            raise RuntimeError(
                f"password reset messages for {locale!r} differ in keys: {sorted(set(strings) ^ set(reference))}"
            )
        for key, text in strings.items():
            if _placeholders(text) != _placeholders(reference[key]):
                raise RuntimeError(f"password reset message {locale}.{key} has other placeholders than en")


def _merge_confirm_messages() -> None:
    from streamer.password_reset.confirm_messages import CONFIRM_MESSAGES

    for locale in SUPPORTED_LOCALES:
        MESSAGES[locale].update(CONFIRM_MESSAGES[locale])


_merge_confirm_messages()
_check_messages()


def choose_locale(*candidates: str | None) -> str:
    """The first candidate whose language is supported (`fr-CA` → fr); English if none is."""
    for candidate in candidates:
        tag = normalize_locale(candidate)
        if tag:
            language = tag.split("-", 1)[0]
            if language in SUPPORTED_LOCALES:
                return language
    return "en"
