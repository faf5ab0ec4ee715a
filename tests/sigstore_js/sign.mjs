// A private, offline Sigstore for the tests (issue 23), signing with sigstore-js.
//
// Reads one JSON request on stdin, writes one JSON answer on stdout:
//   request: {
//     time: "2025-06-01T12:00:00Z",          // the one clock of this Sigstore
//     keys: {fulcioRoot, fulcioIntermediate, ctlog, rekor, tsaRoot, tsa: PKCS#8 PEM},
//     treeId: 42, filler: 5,                   // the log's shard id; leaves logged before ours
//     state: {...},                            // optional: the state an earlier answer gave
//     tsaInRoot: true,                         // list the TSA in the trusted root
//     requests: [
//       {kind: "keyless", statement: "<JSON text>", identity, issuer, tsa: false},
//       {kind: "key", statement: "<JSON text>", key: "<PKCS#8 PEM>", tlog: true, tsa: false},
//     ]
//   }
//   answer: {trustedRoot: {...}, bundles: [{...bundle v0.3 JSON...}, ...], state: {...}}
// The state (certificates, log leaves, serial) lets the next request go on
// with the same CA certificates (ECDSA signatures are not reproducible) and
// the same log, so that every bundle of one PrivateSigstore verifies against
// one trusted root.
//
// What sigstore-js does: the DSSE envelope and its pre-authentication encoding,
// the ephemeral key and its proof of possession (FulcioSigner), the Rekor request
// (RekorWitness), the RFC 3161 request (TSAWitness), the bundle.
// What @sigstore/mock lacks, built here instead:
// - a Fulcio CA of root and intermediate: the mock's CA is one self-signed root
//   that signs the leaves itself;
// - a Rekor whose dsse entry is the canonical one (hashes of envelope and
//   payload, each signature with its verifier as canonical PEM): the mock logs
//   the proposed entry as the client sent it, which @sigstore/verify refuses
//   ("signature count mismatch") and sigstore-python too;
// - a real Merkle tree (RFC 6962) with an inclusion proof and a checkpoint for
//   it: the mock's tree has one leaf, a random log index and a proof at index 0
//   with no hashes (which a protobuf JSON bundle then omits and sigstore-python
//   refuses to load);
// - a TSA chain valid at the chosen clock: the mock's TSA certificates are valid
//   from the real now, whatever its clock says.
// Used from the mock: its CT log (the SCT) and its RFC 3161 signer. Every
// bundle is verified with @sigstore/verify before it is written out.
//
// All HTTP goes to nock interceptors: nothing leaves the process.
import { createRequire } from 'node:module';
import crypto from 'node:crypto';

const require = createRequire(import.meta.url);
require('reflect-metadata'); // @peculiar/x509 wants it loaded first
const nock = require('nock');
const x509 = require('@peculiar/x509');
const asn1js = require('asn1js');
const pkijs = require('pkijs');
const canonicalize = require('canonicalize');
const sign = require('@sigstore/sign');
const mock = require('@sigstore/mock');
const verify = require('@sigstore/verify');
const bundleLib = require('@sigstore/bundle');
const { TrustedRoot } = require('@sigstore/protobuf-specs');

x509.cryptoProvider.set(crypto.webcrypto);

const FULCIO_URL = 'https://fulcio.sigstore.test';
const REKOR_URL = 'https://rekor.sigstore.test';
const TSA_URL = 'https://tsa.sigstore.test';
const REKOR_ORIGIN_HOST = 'rekor.sigstore.test';
const OID_ISSUER_V1 = '1.3.6.1.4.1.57264.1.1';
const OID_ISSUER_V2 = '1.3.6.1.4.1.57264.1.8';
const OID_SCT_LIST = '1.3.6.1.4.1.11129.2.4.2';
const ROOT_NAME = 'CN=sigstore,O=sigstore.test';
const INTERMEDIATE_NAME = 'CN=sigstore-intermediate,O=sigstore.test';
const TSA_ROOT_NAME = 'CN=tsa,O=sigstore.test';
const TSA_SIGNER_NAME = 'CN=tsa signing,O=sigstore.test';
const LEAF_MINUTES = 10;

const sha256 = (data) => crypto.createHash('sha256').update(data).digest();
const b64 = (buf) => Buffer.from(buf).toString('base64');
const spkiDER = (key) => key.export({ format: 'der', type: 'spki' });

function keyPair(pem) {
  const privateKey = crypto.createPrivateKey(pem);
  return { privateKey, publicKey: crypto.createPublicKey(privateKey) };
}

// A Node KeyObject as a WebCrypto key, for @peculiar/x509.
async function webKey(key, curve) {
  const alg = { name: 'ECDSA', namedCurve: curve };
  if (key.type === 'private') {
    const der = key.export({ format: 'der', type: 'pkcs8' });
    return crypto.webcrypto.subtle.importKey('pkcs8', der, alg, true, ['sign']);
  }
  return crypto.webcrypto.subtle.importKey('spki', spkiDER(key), alg, true, ['verify']);
}

function curveOf(key) {
  const name = key.asymmetricKeyDetails.namedCurve;
  return { prime256v1: ['P-256', 'SHA-256'], secp384r1: ['P-384', 'SHA-384'] }[name];
}

// A serial number from a label: positive, 16 bytes.
const serialOf = (label) => '01' + sha256(label).subarray(0, 15).toString('hex');

// ---- Fulcio: root and intermediate CA, leaves with an embedded SCT ----------

async function makeCA(rootPair, intPair, now, state) {
  const [rootCurve, rootHash] = curveOf(rootPair.privateKey);
  const [intCurve] = curveOf(intPair.privateKey);
  const rootPriv = await webKey(rootPair.privateKey, rootCurve);
  const rootPub = await webKey(rootPair.publicKey, rootCurve);
  const intPriv = await webKey(intPair.privateKey, intCurve);
  const intPub = await webKey(intPair.publicKey, intCurve);
  const notBefore = new Date(now.getTime() - 365 * 86400_000);
  const notAfter = new Date(now.getTime() + 10 * 365 * 86400_000);
  const caUsage = new x509.KeyUsagesExtension(
    x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRlSign, true);
  const intHash = curveOf(intPair.privateKey)[1];
  if (state) {
    const root = new x509.X509Certificate(Buffer.from(state.fulcioRoot, 'base64'));
    const intermediate = new x509.X509Certificate(Buffer.from(state.fulcioIntermediate, 'base64'));
    return { root, intermediate, intPriv, intPub, intPair, intHash };
  }
  const root = await x509.X509CertificateGenerator.create({
    serialNumber: serialOf('root' + ROOT_NAME),
    subject: ROOT_NAME, issuer: ROOT_NAME, notBefore, notAfter,
    publicKey: rootPub, signingKey: rootPriv,
    signingAlgorithm: { name: 'ECDSA', hash: rootHash },
    extensions: [
      new x509.BasicConstraintsExtension(true, 1, true),
      caUsage,
      await x509.SubjectKeyIdentifierExtension.create(rootPub),
    ],
  });
  const intermediate = await x509.X509CertificateGenerator.create({
    serialNumber: serialOf('intermediate' + INTERMEDIATE_NAME),
    subject: INTERMEDIATE_NAME, issuer: ROOT_NAME, notBefore, notAfter,
    publicKey: intPub, signingKey: rootPriv,
    signingAlgorithm: { name: 'ECDSA', hash: rootHash },
    extensions: [
      new x509.BasicConstraintsExtension(true, 0, true),
      caUsage,
      new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.codeSigning]),
      await x509.SubjectKeyIdentifierExtension.create(intPub),
      await x509.AuthorityKeyIdentifierExtension.create(rootPub),
    ],
  });
  return { root, intermediate, intPriv, intPub, intPair, intHash };
}

// The mock's CT log answers with one serialized SCT, already prefixed with
// its length (pkijs' toStream); the list around it is prefixed once more.
function sctListExtension(sct) {
  const serialized = Buffer.from(sct);
  const list = Buffer.alloc(2);
  list.writeUInt16BE(serialized.length);
  return new x509.Extension(OID_SCT_LIST, false,
    new asn1js.OctetString({ valueHex: Buffer.concat([list, serialized]) }).toBER(false));
}

async function issueLeaf(ca, ctlog, { publicKeyPEM, identity, issuer, now, serial }) {
  const spki = crypto.createPublicKey(publicKeyPEM).export({ format: 'der', type: 'spki' });
  const leafKey = await crypto.webcrypto.subtle.importKey(
    'spki', spki, { name: 'ECDSA', namedCurve: 'P-256' }, true, ['verify']);
  const san = identity.includes('://') ? { type: 'url', value: identity } : { type: 'email', value: identity };
  const tbs = {
    serialNumber: serial,
    subject: '', issuer: INTERMEDIATE_NAME,
    notBefore: now, notAfter: new Date(now.getTime() + LEAF_MINUTES * 60_000),
    publicKey: leafKey, signingKey: ca.intPriv,
    signingAlgorithm: { name: 'ECDSA', hash: ca.intHash },
    extensions: [
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
      new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.codeSigning]),
      await x509.SubjectKeyIdentifierExtension.create(leafKey),
      await x509.AuthorityKeyIdentifierExtension.create(ca.intPub),
      new x509.SubjectAlternativeNameExtension([san], true),
      new x509.Extension(OID_ISSUER_V1, false, Buffer.from(issuer)),
      new x509.Extension(OID_ISSUER_V2, false, new asn1js.Utf8String({ value: issuer }).toBER(false)),
    ],
  };
  // The SCT signs the precertificate's TBS (RFC 6962 3.2); the final
  // certificate is the same TBS with the SCT list appended.
  const precert = await x509.X509CertificateGenerator.create(tbs);
  const issuerKeyHash = sha256(spkiDER(ca.intPair.publicKey));
  const sct = await ctlog.log(precert.rawData, issuerKeyHash);
  tbs.extensions.push(sctListExtension(sct));
  return x509.X509CertificateGenerator.create(tbs);
}

// ---- TSA: the mock's RFC 3161 signer, under a chain built here -------------
// The mock's TSA certificates are valid from the real now, whatever its clock
// says, and its "root" and "intermediate" share one key: its certificates are
// replaced by a root and a timestamping leaf valid at this Sigstore's time.

async function makeTSA(rootPair, signerPair, now, state) {
  const tsa = await mock.initializeTSA(signerPair, now);
  if (state) {
    tsa.rootCert = pkijs.Certificate.fromBER(Buffer.from(state.tsaRoot, 'base64'));
    tsa.intCert = pkijs.Certificate.fromBER(Buffer.from(state.tsaSigner, 'base64'));
    return tsa;
  }
  const rootPriv = await webKey(rootPair.privateKey, 'P-256');
  const rootPub = await webKey(rootPair.publicKey, 'P-256');
  const signerPub = await webKey(signerPair.publicKey, 'P-256');
  const notBefore = new Date(now.getTime() - 365 * 86400_000);
  const notAfter = new Date(now.getTime() + 10 * 365 * 86400_000);
  const alg = { name: 'ECDSA', hash: 'SHA-256' };
  const root = await x509.X509CertificateGenerator.create({
    serialNumber: serialOf('tsa root'), subject: TSA_ROOT_NAME, issuer: TSA_ROOT_NAME,
    notBefore, notAfter, publicKey: rootPub, signingKey: rootPriv, signingAlgorithm: alg,
    extensions: [
      new x509.BasicConstraintsExtension(true, 0, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRlSign, true),
      await x509.SubjectKeyIdentifierExtension.create(rootPub),
    ],
  });
  const leaf = await x509.X509CertificateGenerator.create({
    serialNumber: serialOf('tsa signer'), subject: TSA_SIGNER_NAME, issuer: TSA_ROOT_NAME,
    notBefore, notAfter, publicKey: signerPub, signingKey: rootPriv, signingAlgorithm: alg,
    extensions: [
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
      new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.timeStamping], true),
      await x509.SubjectKeyIdentifierExtension.create(signerPub),
      await x509.AuthorityKeyIdentifierExtension.create(rootPub),
    ],
  });
  tsa.rootCert = pkijs.Certificate.fromBER(root.rawData);
  tsa.intCert = pkijs.Certificate.fromBER(leaf.rawData);
  return tsa;
}

// ---- Rekor: a Merkle tree (RFC 6962), canonical DSSE entries, SET, checkpoint ----

const leafHash = (data) => sha256(Buffer.concat([Buffer.from([0]), data]));
const nodeHash = (l, r) => sha256(Buffer.concat([Buffer.from([1]), l, r]));
const splitPoint = (n) => { let k = 1; while (k * 2 < n) k *= 2; return k; };

function treeHash(leaves) {
  if (leaves.length === 1) return leaves[0];
  const k = splitPoint(leaves.length);
  return nodeHash(treeHash(leaves.slice(0, k)), treeHash(leaves.slice(k)));
}

// RFC 6962 2.1.1 PATH(m, D[n]), leaf to root.
function auditPath(m, leaves) {
  if (leaves.length <= 1) return [];
  const k = splitPoint(leaves.length);
  if (m < k) return [...auditPath(m, leaves.slice(0, k)), treeHash(leaves.slice(k))];
  return [...auditPath(m - k, leaves.slice(k)), treeHash(leaves.slice(0, k))];
}

// Rekor stores a verifier as its canonical PEM (Go's pem.EncodeToMemory:
// 64 columns, a final newline), whatever layout the client sent.
function canonicalVerifier(b64pem) {
  const pem = Buffer.from(b64pem, 'base64').toString();
  if (pem.includes('CERTIFICATE')) {
    const cert = new crypto.X509Certificate(pem);
    return { key: cert.publicKey, pem: b64(cert.toString()) };
  }
  const key = crypto.createPublicKey(pem);
  return { key, pem: b64(key.export({ format: 'pem', type: 'spki' })) };
}

class Rekor {
  constructor(pair, { treeId, filler, now, leaves }) {
    this.pair = pair;
    this.logID = sha256(spkiDER(pair.publicKey));
    this.treeId = treeId;
    this.now = now;
    this.leaves = (leaves || []).map((h) => Buffer.from(h, 'hex'));
    if (leaves) return;
    for (let i = 0; i < filler; i++) this.leaves.push(leafHash(Buffer.from(`filler entry ${i}`)));
  }

  // Rekor's dsse v0.0.1 entry as it stores it: hashes of the envelope and of
  // the payload, each signature with the verifier that checks it.
  canonicalDSSE(proposed) {
    const { envelope, verifiers } = proposed.spec.proposedContent;
    const env = JSON.parse(envelope);
    const payload = Buffer.from(env.payload, 'base64');
    const pae = Buffer.concat([
      Buffer.from(`DSSEv1 ${Buffer.byteLength(env.payloadType)} ${env.payloadType} ${payload.length} `),
      payload]);
    const signatures = env.signatures.map((s) => {
      const verifier = verifiers.map(canonicalVerifier).find(({ key }) =>
        crypto.verify('sha256', pae, key, Buffer.from(s.sig, 'base64')));
      if (!verifier) throw new Error('rekor: no verifier checks the signature');
      return { signature: s.sig, verifier: verifier.pem };
    }).sort((a, b) => (a.signature < b.signature ? -1 : 1));
    return {
      apiVersion: '0.0.1', kind: 'dsse',
      spec: {
        envelopeHash: { algorithm: 'sha256', value: sha256(envelope).toString('hex') },
        payloadHash: { algorithm: 'sha256', value: sha256(payload).toString('hex') },
        signatures,
      },
    };
  }

  log(proposed) {
    if (proposed.kind !== 'dsse') throw new Error(`rekor: kind ${proposed.kind} not served`);
    const body = Buffer.from(canonicalize(this.canonicalDSSE(proposed)));
    const index = this.leaves.length;
    this.leaves.push(leafHash(body));
    const integratedTime = Math.floor(this.now.getTime() / 1000);
    const logID = this.logID.toString('hex');
    const set = crypto.sign('sha256', Buffer.from(canonicalize({
      body: b64(body), integratedTime, logIndex: index, logID,
    })), this.pair.privateKey);
    const size = this.leaves.length;
    const root = treeHash(this.leaves);
    const note = `${REKOR_ORIGIN_HOST} - ${this.treeId}\n${size}\n${b64(root)}\n`;
    const noteSig = crypto.sign('sha256', Buffer.from(note), this.pair.privateKey);
    const checkpoint = `${note}\n\u2014 ${REKOR_ORIGIN_HOST} ${b64(Buffer.concat([this.logID.subarray(0, 4), noteSig]))}\n`;
    const uuid = this.leaves[index].toString('hex');
    return {
      [uuid]: {
        body: b64(body), integratedTime, logID, logIndex: index,
        verification: {
          signedEntryTimestamp: b64(set),
          inclusionProof: {
            logIndex: index, treeSize: size, rootHash: root.toString('hex'),
            hashes: auditPath(index, this.leaves).map((h) => h.toString('hex')),
            checkpoint,
          },
        },
      },
    };
  }
}

// ---- the trusted root -------------------------------------------------------

function keyEntry(url, publicKey, start) {
  const der = spkiDER(publicKey);
  return {
    baseUrl: url, hashAlgorithm: 'SHA2_256',
    publicKey: { rawBytes: b64(der), keyDetails: 'PKIX_ECDSA_P256_SHA_256', validFor: { start } },
    logId: { keyId: b64(sha256(der)) },
  };
}

function trustedRoot({ ca, rekor, ctlogPair, tsa, tsaInRoot, start }) {
  const root = {
    mediaType: 'application/vnd.dev.sigstore.trustedroot+json;version=0.1',
    tlogs: [keyEntry(REKOR_URL, rekor.pair.publicKey, start)],
    certificateAuthorities: [{
      subject: { organization: 'sigstore.test', commonName: 'sigstore' },
      uri: FULCIO_URL,
      certChain: { certificates: [{ rawBytes: b64(ca.intermediate.rawData) }, { rawBytes: b64(ca.root.rawData) }] },
      validFor: { start },
    }],
    ctlogs: [keyEntry('https://ctfe.sigstore.test', ctlogPair.publicKey, start)],
    timestampAuthorities: [],
  };
  if (tsaInRoot) {
    root.timestampAuthorities.push({
      subject: { organization: 'sigstore.test', commonName: 'tsa' },
      uri: TSA_URL,
      certChain: { certificates: [{ rawBytes: b64(tsa.intCertificate) }, { rawBytes: b64(tsa.rootCertificate) }] },
      validFor: { start },
    });
  }
  return root;
}

// ---- signing ------------------------------------------------------------------

function unsignedJWT(claims) {
  const part = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');
  return `${part({ alg: 'none', typ: 'JWT' })}.${part(claims)}.`;
}

class KeySigner {
  constructor(pem) {
    this.pair = keyPair(pem);
    this.pem = this.pair.publicKey.export({ format: 'pem', type: 'spki' }).toString();
    this.hint = b64(sha256(spkiDER(this.pair.publicKey)));
  }

  async sign(data) {
    return {
      signature: crypto.sign('sha256', data, this.pair.privateKey),
      key: { $case: 'publicKey', publicKey: this.pem, hint: this.hint },
    };
  }
}

function check(rootJSON, bundleJSON, req, keySigner) {
  const keys = {};
  if (keySigner) {
    keys[keySigner.hint] = {
      rawBytes: spkiDER(keySigner.pair.publicKey),
      keyDetails: 'PKIX_ECDSA_P256_SHA_256',
    };
  }
  const material = verify.toTrustMaterial(TrustedRoot.fromJSON(rootJSON), keys);
  const logged = req.kind === 'keyless' || req.tlog;
  const verifier = new verify.Verifier(material, {
    tlogThreshold: logged ? 1 : 0,
    ctlogThreshold: req.kind === 'keyless' ? 1 : 0,
    timestampThreshold: logged || req.tsa ? 1 : 0,
  });
  const entity = verify.toSignedEntity(bundleLib.bundleFromJSON(bundleJSON));
  const policy = req.kind === 'keyless'
    ? { subjectAlternativeName: req.identity, extensions: { issuer: req.issuer } }
    : undefined;
  verifier.verify(entity, policy);
}

async function main() {
  const chunks = [];
  for await (const chunk of process.stdin) chunks.push(chunk);
  const request = JSON.parse(Buffer.concat(chunks).toString());
  const now = new Date(request.time);
  const start = new Date(now.getTime() - 86400_000).toISOString();

  nock.disableNetConnect();
  const state = request.state || null;
  const ca = await makeCA(keyPair(request.keys.fulcioRoot), keyPair(request.keys.fulcioIntermediate), now, state);
  const ctlogPair = keyPair(request.keys.ctlog);
  const ctlog = await mock.initializeCTLog(ctlogPair, now);
  const rekor = new Rekor(keyPair(request.keys.rekor), {
    treeId: request.treeId, filler: request.filler, now, leaves: state && state.leaves,
  });
  const tsa = await makeTSA(keyPair(request.keys.tsaRoot), keyPair(request.keys.tsa), now, state);
  const tsaInRoot = request.tsaInRoot !== false;

  let current = null; // the keyless request being signed: who the CA certifies
  let serial = state ? state.serial : 0;
  nock(FULCIO_URL).persist().post('/api/v2/signingCert').reply(async (_uri, body) => {
    const json = typeof body === 'string' ? JSON.parse(body) : body;
    serial += 1;
    const leaf = await issueLeaf(ca, ctlog, {
      publicKeyPEM: json.publicKeyRequest.publicKey.content,
      identity: current.identity, issuer: current.issuer, now,
      serial: serialOf(`leaf ${serial} ${current.identity}`),
    });
    const chain = [leaf, ca.intermediate, ca.root].map((c) => c.toString('pem'));
    return [201, { signedCertificateEmbeddedSct: { chain: { certificates: chain } } },
      { 'Content-Type': 'application/json' }];
  });
  nock(REKOR_URL).persist().post('/api/v1/log/entries').reply((_uri, body) => {
    const json = typeof body === 'string' ? JSON.parse(body) : body;
    return [201, rekor.log(json), { 'Content-Type': 'application/json' }];
  });
  const tsaHandler = mock.tsaHandler(tsa);
  nock(TSA_URL).persist().post(tsaHandler.path).reply(async (_uri, body) => {
    const req = typeof body === 'string' ? body : JSON.stringify(body);
    const { statusCode, response, contentType } = await tsaHandler.fn(req);
    return [statusCode, response, { 'Content-Type': contentType || 'application/timestamp-reply' }];
  });

  const pending = [];
  for (const req of request.requests) {
    const witnesses = [];
    if (req.kind === 'keyless' || req.tlog) {
      witnesses.push(new sign.RekorWitness({ rekorBaseURL: REKOR_URL, entryType: 'dsse', retry: 0 }));
    }
    if (req.tsa) witnesses.push(new sign.TSAWitness({ tsaBaseURL: TSA_URL, retry: 0 }));
    let signer;
    let keySigner = null;
    if (req.kind === 'keyless') {
      current = req;
      signer = new sign.FulcioSigner({
        fulcioBaseURL: FULCIO_URL, retry: 0,
        identityProvider: { getToken: async () => unsignedJWT({ iss: req.issuer, sub: req.identity, aud: 'sigstore' }) },
      });
    } else if (req.kind === 'key') {
      keySigner = new KeySigner(req.key);
      signer = keySigner;
    } else {
      throw new Error(`unknown request kind ${req.kind}`);
    }
    const builder = new sign.DSSEBundleBuilder({ signer, witnesses });
    const bundle = await builder.create({ data: Buffer.from(req.statement), type: 'application/vnd.in-toto+json' });
    pending.push({ req, keySigner, bundleJSON: bundleLib.bundleToJSON(bundle) });
  }

  const rootJSON = trustedRoot({ ca, rekor, ctlogPair, tsa, tsaInRoot, start });
  for (const { req, keySigner, bundleJSON } of pending) check(rootJSON, bundleJSON, req, keySigner);
  const next = {
    fulcioRoot: b64(ca.root.rawData), fulcioIntermediate: b64(ca.intermediate.rawData),
    tsaRoot: b64(tsa.rootCertificate), tsaSigner: b64(tsa.intCertificate),
    leaves: rekor.leaves.map((h) => h.toString('hex')), serial,
  };
  process.stdout.write(JSON.stringify({
    trustedRoot: rootJSON, bundles: pending.map((p) => p.bundleJSON), state: next,
  }));
}

main().catch((err) => {
  process.stderr.write(`sign.mjs: ${err.stack || err}\n${err.cause ? `cause: ${err.cause.stack || err.cause}\n` : ''}`);
  process.exit(1);
});
