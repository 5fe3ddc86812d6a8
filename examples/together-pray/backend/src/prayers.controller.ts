import {
  BadRequestException,
  Body,
  Controller,
  Get,
  NotFoundException,
  Param,
  ParseIntPipe,
  Post,
  Req,
  UseGuards,
} from "@nestjs/common";
import { InjectRepository } from "@nestjs/typeorm";
import { Repository } from "typeorm";
import { AccessTokenGuard, Authenticated } from "./auth/auth.guard";
import { Prayer } from "./prayer.entity";

interface NewPrayer {
  body?: unknown;
}

@Controller("prayers")
export class PrayersController {
  constructor(@InjectRepository(Prayer) private readonly prayers: Repository<Prayer>) {}

  /** The 50 newest prayers, newest first. */
  @Get()
  list(): Promise<Prayer[]> {
    return this.prayers.find({ order: { createdAt: "DESC", id: "DESC" }, take: 50 });
  }

  /** One prayer, for its own page. */
  @Get(":id")
  async one(@Param("id", ParseIntPipe) id: number): Promise<Prayer> {
    const prayer = await this.prayers.findOneBy({ id });
    if (!prayer) {
      throw new NotFoundException("no such prayer");
    }
    return prayer;
  }

  /** Posting needs an access token (reading stays public): the author is the token's user. */
  @Post()
  @UseGuards(AccessTokenGuard)
  async create(@Body() input: NewPrayer, @Req() request: Authenticated): Promise<Prayer> {
    const body = typeof input?.body === "string" ? input.body.trim() : "";
    if (!body || body.length > 2000) {
      throw new BadRequestException("body (1-2000 characters) is required");
    }
    return this.prayers.save(this.prayers.create({ author: request.user.name, body }));
  }
}
