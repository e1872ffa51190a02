"""The confirmation pages' words (merged into `messages.MESSAGES`, checked with it at import)."""

from __future__ import annotations

CONFIRM_MESSAGES: dict[str, dict[str, str]] = {
    "en": {
        "confirm_title": "Confirm your new password",
        "confirm_body": "You asked to reset your password and chose a new one on our form. "
        "Confirm it to make it your password.",
        "confirm_hint": "Nothing changes until you press the button. If you didn’t ask for this, close this page: "
        "your current password stays the same.",
        "confirm_button": "Set my new password",
        "done_title": "Your password was changed",
        "done_body": "You can now sign in with your new password.",
        "expired_title": "This link has expired",
        "expired_body": "For your security, the link works only for a limited time. Nothing was changed: "
        "fill in the form again to get a new link.",
        "used_title": "This link was already used",
        "used_body": "Your new password was already set with this link. To change it again, fill in the form again.",
        "replaced_title": "A newer link replaced this one",
        "replaced_body": "You asked for another password reset after this email. Use the link in the most recent "
        "email, or fill in the form again.",
        "unknown_title": "This link is not valid",
        "unknown_body": "The link may be incomplete: copy the whole link from the email into your browser, "
        "or fill in the form again to get a new one.",
        "policy_title": "Choose another password",
        "policy_strength": "The password you chose is too weak for this account. Choose a longer one that mixes "
        "lower- and upper-case letters, numbers and symbols.",
        "policy_history": "You have used this password before on this account. Choose one you haven’t used yet.",
        "policy_dictionary": "The password you chose is too common and easy to guess. Choose a less common one.",
        "policy_user_info": "The password must not contain your name or your email address. Choose another one.",
        "policy_hint": "Nothing was changed: your current password still works. Fill in the form again with "
        "another password.",
        "retry_title": "Your password could not be changed right now",
        "retry_body": "The service is briefly unavailable. Nothing was changed and your link still works: "
        "try again in a few minutes.",
        "gone_body": "This password reset can no longer be completed. Fill in the form again.",
        "new_request": "Fill in the form again",
    },
    "fr": {
        "confirm_title": "Confirmez votre nouveau mot de passe",
        "confirm_body": "Vous avez demandé la réinitialisation de votre mot de passe et en avez choisi un nouveau "
        "sur notre formulaire. Confirmez-le pour qu’il devienne votre mot de passe.",
        "confirm_hint": "Rien ne change tant que vous n’appuyez pas sur le bouton. Si vous n’êtes pas à l’origine "
        "de cette demande, fermez cette page : votre mot de passe actuel reste inchangé.",
        "confirm_button": "Définir mon nouveau mot de passe",
        "done_title": "Votre mot de passe a été modifié",
        "done_body": "Vous pouvez maintenant vous connecter avec votre nouveau mot de passe.",
        "expired_title": "Ce lien a expiré",
        "expired_body": "Pour votre sécurité, le lien n’est valable que pendant une durée limitée. Rien n’a été "
        "modifié : remplissez de nouveau le formulaire pour recevoir un nouveau lien.",
        "used_title": "Ce lien a déjà été utilisé",
        "used_body": "Votre nouveau mot de passe a déjà été défini avec ce lien. Pour le modifier encore, "
        "remplissez de nouveau le formulaire.",
        "replaced_title": "Un lien plus récent a remplacé celui-ci",
        "replaced_body": "Vous avez fait une autre demande de réinitialisation après cet e-mail. Utilisez le lien "
        "du message le plus récent, ou remplissez de nouveau le formulaire.",
        "unknown_title": "Ce lien n’est pas valide",
        "unknown_body": "Le lien est peut-être incomplet : copiez le lien entier de l’e-mail dans votre "
        "navigateur, ou remplissez de nouveau le formulaire pour en recevoir un nouveau.",
        "policy_title": "Choisissez un autre mot de passe",
        "policy_strength": "Le mot de passe choisi est trop faible pour ce compte. Choisissez-en un plus long qui "
        "mélange minuscules, majuscules, chiffres et symboles.",
        "policy_history": "Vous avez déjà utilisé ce mot de passe pour ce compte. Choisissez-en un que vous "
        "n’avez pas encore utilisé.",
        "policy_dictionary": "Le mot de passe choisi est trop courant et facile à deviner. Choisissez-en un moins "
        "courant.",
        "policy_user_info": "Le mot de passe ne doit contenir ni votre nom ni votre adresse e-mail. "
        "Choisissez-en un autre.",
        "policy_hint": "Rien n’a été modifié : votre mot de passe actuel fonctionne toujours. Remplissez de "
        "nouveau le formulaire avec un autre mot de passe.",
        "retry_title": "Votre mot de passe n’a pas pu être modifié pour le moment",
        "retry_body": "Le service est momentanément indisponible. Rien n’a été modifié et votre lien fonctionne "
        "toujours : réessayez dans quelques minutes.",
        "gone_body": "Cette réinitialisation ne peut plus être menée à bien. Remplissez de nouveau le formulaire.",
        "new_request": "Remplir de nouveau le formulaire",
    },
    "de": {
        "confirm_title": "Bestätigen Sie Ihr neues Passwort",
        "confirm_body": "Sie haben das Zurücksetzen Ihres Passworts angefordert und in unserem Formular ein neues "
        "gewählt. Bestätigen Sie es, damit es Ihr Passwort wird.",
        "confirm_hint": "Erst wenn Sie auf die Schaltfläche klicken, ändert sich etwas. Falls Sie dies nicht "
        "angefordert haben, schließen Sie diese Seite: Ihr bisheriges Passwort bleibt gültig.",
        "confirm_button": "Neues Passwort festlegen",
        "done_title": "Ihr Passwort wurde geändert",
        "done_body": "Sie können sich jetzt mit Ihrem neuen Passwort anmelden.",
        "expired_title": "Dieser Link ist abgelaufen",
        "expired_body": "Aus Sicherheitsgründen ist der Link nur begrenzte Zeit gültig. Es wurde nichts geändert: "
        "Füllen Sie das Formular erneut aus, um einen neuen Link zu erhalten.",
        "used_title": "Dieser Link wurde bereits verwendet",
        "used_body": "Ihr neues Passwort wurde mit diesem Link bereits festgelegt. Um es erneut zu ändern, füllen "
        "Sie das Formular noch einmal aus.",
        "replaced_title": "Ein neuerer Link hat diesen ersetzt",
        "replaced_body": "Sie haben nach dieser E-Mail ein weiteres Zurücksetzen angefordert. Verwenden Sie den "
        "Link aus der neuesten E-Mail oder füllen Sie das Formular erneut aus.",
        "unknown_title": "Dieser Link ist ungültig",
        "unknown_body": "Der Link ist vielleicht unvollständig: Kopieren Sie den ganzen Link aus der E-Mail in "
        "Ihren Browser oder füllen Sie das Formular erneut aus, um einen neuen zu erhalten.",
        "policy_title": "Wählen Sie ein anderes Passwort",
        "policy_strength": "Das gewählte Passwort ist für dieses Konto zu schwach. Wählen Sie ein längeres, das "
        "Klein- und Großbuchstaben, Ziffern und Sonderzeichen mischt.",
        "policy_history": "Sie haben dieses Passwort für dieses Konto bereits verwendet. Wählen Sie eines, das Sie "
        "noch nicht verwendet haben.",
        "policy_dictionary": "Das gewählte Passwort ist zu verbreitet und leicht zu erraten. Wählen Sie ein "
        "weniger gängiges.",
        "policy_user_info": "Das Passwort darf weder Ihren Namen noch Ihre E-Mail-Adresse enthalten. Wählen Sie "
        "ein anderes.",
        "policy_hint": "Es wurde nichts geändert: Ihr bisheriges Passwort gilt weiterhin. Füllen Sie das Formular "
        "mit einem anderen Passwort erneut aus.",
        "retry_title": "Ihr Passwort konnte gerade nicht geändert werden",
        "retry_body": "Der Dienst ist kurzzeitig nicht erreichbar. Es wurde nichts geändert und Ihr Link gilt "
        "weiterhin: Versuchen Sie es in einigen Minuten erneut.",
        "gone_body": "Dieses Zurücksetzen kann nicht mehr abgeschlossen werden. Füllen Sie das Formular erneut aus.",
        "new_request": "Formular erneut ausfüllen",
    },
    "es": {
        "confirm_title": "Confirme su nueva contraseña",
        "confirm_body": "Ha solicitado restablecer su contraseña y ha elegido una nueva en nuestro formulario. "
        "Confírmela para que pase a ser su contraseña.",
        "confirm_hint": "No se cambiará nada hasta que pulse el botón. Si no lo ha solicitado usted, cierre esta "
        "página: su contraseña actual seguirá siendo la misma.",
        "confirm_button": "Establecer mi nueva contraseña",
        "done_title": "Su contraseña se ha cambiado",
        "done_body": "Ya puede iniciar sesión con su nueva contraseña.",
        "expired_title": "Este enlace ha caducado",
        "expired_body": "Por su seguridad, el enlace solo funciona durante un tiempo limitado. No se ha cambiado "
        "nada: rellene de nuevo el formulario para recibir un enlace nuevo.",
        "used_title": "Este enlace ya se ha utilizado",
        "used_body": "Su nueva contraseña ya se estableció con este enlace. Para cambiarla otra vez, rellene de "
        "nuevo el formulario.",
        "replaced_title": "Un enlace más reciente ha sustituido a este",
        "replaced_body": "Ha solicitado otro restablecimiento después de este correo. Utilice el enlace del correo "
        "más reciente o rellene de nuevo el formulario.",
        "unknown_title": "Este enlace no es válido",
        "unknown_body": "Puede que el enlace esté incompleto: copie el enlace completo del correo en su navegador "
        "o rellene de nuevo el formulario para recibir uno nuevo.",
        "policy_title": "Elija otra contraseña",
        "policy_strength": "La contraseña que ha elegido es demasiado débil para esta cuenta. Elija una más larga "
        "que combine minúsculas, mayúsculas, números y símbolos.",
        "policy_history": "Ya ha utilizado esta contraseña en esta cuenta. Elija una que no haya utilizado antes.",
        "policy_dictionary": "La contraseña que ha elegido es demasiado común y fácil de adivinar. Elija una menos "
        "común.",
        "policy_user_info": "La contraseña no puede contener su nombre ni su dirección de correo. Elija otra.",
        "policy_hint": "No se ha cambiado nada: su contraseña actual sigue funcionando. Rellene de nuevo el "
        "formulario con otra contraseña.",
        "retry_title": "No se ha podido cambiar su contraseña en este momento",
        "retry_body": "El servicio no está disponible temporalmente. No se ha cambiado nada y su enlace sigue "
        "funcionando: inténtelo de nuevo dentro de unos minutos.",
        "gone_body": "Este restablecimiento ya no se puede completar. Rellene de nuevo el formulario.",
        "new_request": "Rellenar de nuevo el formulario",
    },
}
