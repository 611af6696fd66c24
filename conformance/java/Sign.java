/*
 * Sign with a private key in a PKCS#11 token through SunPKCS11, verify in software.
 *
 *   javac -d build Sign.java
 *   java -cp build Sign <sunpkcs11.cfg> <pin> <alias> <algorithm>
 *
 * <sunpkcs11.cfg> names the module, e.g.
 *   name = ptkhsm
 *   library = /path/to/libptkhsm.so
 *   slot = 0
 * <alias> is a key entry of the token's keystore (keytool -list shows them),
 * <algorithm> a JCA signature name: SHA256withRSA, SHA256withECDSA, ...
 * Prints "ok: ..." and exits 0 when the signature verifies.
 */
import java.nio.charset.StandardCharsets;
import java.security.KeyStore;
import java.security.PrivateKey;
import java.security.Provider;
import java.security.Security;
import java.security.Signature;
import java.security.cert.Certificate;

public class Sign {
    public static void main(String[] args) throws Exception {
        if (args.length != 4) {
            System.err.println("usage: Sign <sunpkcs11.cfg> <pin> <alias> <algorithm>");
            System.exit(2);
        }
        // The configured provider is used explicitly and not installed, so the
        // verification below runs in the JDK's own (software) providers.
        Provider token = Security.getProvider("SunPKCS11").configure(args[0]);
        KeyStore keyStore = KeyStore.getInstance("PKCS11", token);
        keyStore.load(null, args[1].toCharArray());

        PrivateKey key = (PrivateKey) keyStore.getKey(args[2], null);
        Certificate certificate = keyStore.getCertificate(args[2]);
        if (key == null || certificate == null) {
            System.err.println("no key entry " + args[2] + " in the token");
            System.exit(1);
        }
        byte[] data = "signed inside a PKCS#11 token".getBytes(StandardCharsets.UTF_8);

        Signature signer = Signature.getInstance(args[3], token);
        signer.initSign(key);
        signer.update(data);
        byte[] signature = signer.sign();

        Signature verifier = Signature.getInstance(args[3]);
        verifier.initVerify(certificate.getPublicKey());
        verifier.update(data);
        if (!verifier.verify(signature)) {
            System.err.println("the signature does not verify");
            System.exit(1);
        }
        System.out.println("ok: " + args[3] + " signature of " + signature.length + " bytes by "
                + signer.getProvider().getName() + ", verified by " + verifier.getProvider().getName());
    }
}
