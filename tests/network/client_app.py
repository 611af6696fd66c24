"""A python-pkcs11 application driven line by line on stdin, for tests that need
several client processes on one server. Each command answers one line:
`ok [result]` or `err <exception name>`.

  open [PIN]        open a read/write session (logged in as the user with PIN)
  close             close it (python-pkcs11 logs out first)
  session-object L  create a session data object labelled L
  private-object L  create a private token data object labelled L
  find L            count the objects labelled L this session sees
  read L            the CKA_VALUE of the one object labelled L
  sign-start        start a multi-part HMAC over a fresh session key
  sign-more         feed it a part
"""

import os
import sys

import pkcs11
from pkcs11 import Attribute, ObjectClass

lib = pkcs11.lib(os.environ["PKCS11_MODULE"])
token = lib.get_token(token_label=os.environ["PKCS11_TOKEN_LABEL"])
session = None


def run(words):
    global session
    command, args = words[0], words[1:]
    if command == "open":
        session = token.open(rw=True, user_pin=args[0] if args else None)
    elif command == "close":
        session.close()
        session = None
    elif command in ("session-object", "private-object"):
        private = command == "private-object"
        session.create_object({Attribute.CLASS: ObjectClass.DATA, Attribute.LABEL: args[0],
                               Attribute.TOKEN: private, Attribute.PRIVATE: private, Attribute.VALUE: b"v"})
    elif command == "find":
        return str(len(list(session.get_objects({Attribute.LABEL: args[0]}))))
    elif command == "read":
        (obj,) = session.get_objects({Attribute.LABEL: args[0]})
        return obj[Attribute.VALUE].decode()
    else:
        raise ValueError(command)
    return ""


for line in sys.stdin:
    try:
        result = run(line.split())
        print("ok", result, flush=True)
    except Exception as exc:  # the test reads the name
        print("err", type(exc).__name__, flush=True)
