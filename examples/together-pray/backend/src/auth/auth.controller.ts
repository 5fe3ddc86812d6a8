import {
  BadRequestException,
  Body,
  ConflictException,
  Controller,
  HttpCode,
  Post,
  UnauthorizedException,
} from "@nestjs/common";
import { InjectRepository } from "@nestjs/typeorm";
import { QueryFailedError, Repository } from "typeorm";
import { User } from "../user.entity";
import { hashPassword, passwordMatches, UNKNOWN_USER_HASH } from "./passwords";
import { check, InvalidToken, tokenPair } from "./tokens";

interface Credentials {
  email?: unknown;
  password?: unknown;
  name?: unknown;
  refreshToken?: unknown;
}

const EMAIL = /^[^\s@]{1,64}@[^\s@]{1,189}\.[^\s@]{1,63}$/;

function text(value: unknown): string {
  return typeof value === "string" ? value.trim() : "";
}

/** Register, log in, and refresh: the tokens the app's write routes ask for. */
@Controller("auth")
export class AuthController {
  constructor(@InjectRepository(User) private readonly users: Repository<User>) {}

  @Post("register")
  async register(@Body() input: Credentials) {
    const email = text(input?.email).toLowerCase();
    const name = text(input?.name);
    const password = typeof input?.password === "string" ? input.password : "";
    if (!EMAIL.test(email) || !name || name.length > 80 || password.length < 10 || password.length > 200) {
      throw new BadRequestException("email, name (1-80 characters) and password (10-200 characters) are required");
    }
    try {
      const passwordHash = await hashPassword(password);
      const user = await this.users.save(this.users.create({ email, name, passwordHash }));
      return tokenPair(user.id, user.name);
    } catch (error) {
      if (error instanceof QueryFailedError && (error as unknown as { code?: string }).code === "23505") {
        throw new ConflictException("that email is registered already");
      }
      throw error;
    }
  }

  @Post("login")
  @HttpCode(200)
  async login(@Body() input: Credentials) {
    const email = text(input?.email).toLowerCase();
    const password = typeof input?.password === "string" ? input.password : "";
    const user = email ? await this.users.findOneBy({ email }) : null;
    // An unknown email costs a hash too, so the answer's time does not tell which emails have an account.
    const matches = await passwordMatches(password, user?.passwordHash ?? (await UNKNOWN_USER_HASH));
    if (!user || !matches) {
      throw new UnauthorizedException("wrong email or password");
    }
    return tokenPair(user.id, user.name);
  }

  @Post("refresh")
  @HttpCode(200)
  async refresh(@Body() input: Credentials) {
    try {
      const claims = check("refresh", text(input?.refreshToken));
      const user = await this.users.findOneBy({ id: Number(claims.sub) });
      if (!user) {
        throw new InvalidToken("no such user");
      }
      return tokenPair(user.id, user.name);
    } catch (error) {
      if (error instanceof InvalidToken) {
        throw new UnauthorizedException("the refresh token is not valid");
      }
      throw error;
    }
  }
}
