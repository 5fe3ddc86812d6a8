import { CanActivate, ExecutionContext, Injectable, UnauthorizedException } from "@nestjs/common";
import { check, Claims, InvalidToken } from "./tokens";

/** The part of an HTTP request the guard reads, and what it adds: the token's user. */
export interface Authenticated {
  headers: { authorization?: string };
  user: Claims;
}

/** A route behind this guard needs `Authorization: Bearer <access token>`; anything else is a 401. */
@Injectable()
export class AccessTokenGuard implements CanActivate {
  canActivate(context: ExecutionContext): boolean {
    const request = context.switchToHttp().getRequest<Authenticated>();
    const [scheme, token] = (request.headers.authorization ?? "").split(" ");
    if (scheme !== "Bearer" || !token) {
      throw new UnauthorizedException("an access token is required (POST /api/auth/login)");
    }
    try {
      request.user = check("access", token);
    } catch (error) {
      if (error instanceof InvalidToken) {
        throw new UnauthorizedException("the access token is not valid");
      }
      throw error;
    }
    return true;
  }
}
