import { NextRequest, NextResponse } from "next/server";

/**
 * Each page's Content-Security-Policy: vigil's own (roles/nginx, nginx_content_security_policy, which nginx
 * hands over in X-Vigil-Content-Security-Policy) with a fresh nonce for Next.js's inline scripts. The App
 * Router sends a page's data in inline scripts; a policy that allows neither them nor a nonce blocks them,
 * and the page renders empty in a browser. Next.js reads the nonce from the request's policy and puts it on
 * its scripts; nginx sends this response's policy instead of its own.
 */
export function middleware(request: NextRequest): NextResponse {
  const policy = request.headers.get("x-vigil-content-security-policy");
  if (!policy) {
    return NextResponse.next(); // not behind vigil's nginx: its policy, if any, is left as it is
  }
  const nonce = btoa(crypto.randomUUID());
  const allowed = `'nonce-${nonce}' 'strict-dynamic'`;
  const withNonce = /(^|;)\s*script-src\s/.test(policy)
    ? policy.replace(/(^|;)(\s*script-src\s+)([^;]*)/, `$1$2$3 ${allowed}`)
    : `${policy}; script-src 'self' ${allowed}`;
  const headers = new Headers(request.headers);
  headers.set("content-security-policy", withNonce);
  const response = NextResponse.next({ request: { headers } });
  response.headers.set("content-security-policy", withNonce);
  return response;
}

// Pages only: hashed assets and images carry no inline script.
export const config = { matcher: [{ source: "/((?!_next/static|_next/image|favicon.ico).*)" }] };
