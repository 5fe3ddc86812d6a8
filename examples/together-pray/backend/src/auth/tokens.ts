import { JsonWebTokenError, JwtPayload, sign, TokenExpiredError, verify } from "jsonwebtoken";

/**
 * Access tokens (JWT_SECRET, 15 minutes) and refresh tokens (JWT_REFRESH_SECRET, 30 days), HS256 only.
 * After `invoke secrets.rotate JWT_SECRET`, the old secret is JWT_SECRET_PREVIOUS and what it signed is
 * accepted until JWT_SECRET_PREVIOUS_UNTIL (an ISO 8601 time): a rotation logs nobody out.
 */
export type TokenKind = "access" | "refresh";

const ISSUER = "together-pray";
const LIFETIME_SECONDS: Record<TokenKind, number> = {
  access: Number(process.env.JWT_ACCESS_TTL_SECONDS ?? 900),
  refresh: Number(process.env.JWT_REFRESH_TTL_SECONDS ?? 30 * 24 * 3600),
};

export interface Claims {
  sub: string;
  name: string;
  typ: TokenKind;
}

export class InvalidToken extends Error {}

function secret(kind: TokenKind): string {
  const value = kind === "access" ? process.env.JWT_SECRET : process.env.JWT_REFRESH_SECRET;
  if (!value || value.length < 32) {
    // The schema requires both (secrets/schema.yml): a missing one is a deploy's fault, never a weak default.
    throw new Error(`${kind === "access" ? "JWT_SECRET" : "JWT_REFRESH_SECRET"} is not set`);
  }
  return value;
}

/** The secrets a token of `kind` may be signed with now: the current one, and the previous one in its grace. */
function acceptedSecrets(kind: TokenKind, now: number): string[] {
  const secrets = [secret(kind)];
  const previous = kind === "access" ? process.env.JWT_SECRET_PREVIOUS : undefined;
  const until = Date.parse(process.env.JWT_SECRET_PREVIOUS_UNTIL ?? "");
  if (previous && Number.isFinite(until) && now < until) {
    secrets.push(previous);
  }
  return secrets;
}

export function issue(kind: TokenKind, userId: number, name: string): string {
  const claims: Claims = { sub: String(userId), name, typ: kind };
  return sign(claims, secret(kind), { algorithm: "HS256", expiresIn: LIFETIME_SECONDS[kind], issuer: ISSUER });
}

/** The claims of a valid token of `kind`; InvalidToken for a forged, expired or other kind of token. */
export function check(kind: TokenKind, token: string, now = Date.now()): Claims {
  for (const key of acceptedSecrets(kind, now)) {
    try {
      const claims = verify(token, key, { algorithms: ["HS256"], issuer: ISSUER }) as JwtPayload;
      if (claims.typ !== kind || typeof claims.sub !== "string" || typeof claims.name !== "string") {
        throw new InvalidToken(`not an ${kind} token`);
      }
      return { sub: claims.sub, name: claims.name, typ: kind };
    } catch (error) {
      // Signed with this key but expired, or not a token at all: no other key makes it valid.
      if (error instanceof TokenExpiredError || error instanceof InvalidToken) {
        throw new InvalidToken(error.message);
      }
      if (!(error instanceof JsonWebTokenError)) {
        throw error;
      }
    }
  }
  throw new InvalidToken("invalid signature");
}

export interface TokenPair {
  accessToken: string;
  refreshToken: string;
  expiresIn: number;
}

export function tokenPair(userId: number, name: string): TokenPair {
  return {
    accessToken: issue("access", userId, name),
    refreshToken: issue("refresh", userId, name),
    expiresIn: LIFETIME_SECONDS.access,
  };
}
