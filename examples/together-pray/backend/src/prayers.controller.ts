import { BadRequestException, Body, Controller, Get, Post } from "@nestjs/common";
import { InjectRepository } from "@nestjs/typeorm";
import { Repository } from "typeorm";
import { Prayer } from "./prayer.entity";

interface NewPrayer {
  author?: unknown;
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

  @Post()
  async create(@Body() input: NewPrayer): Promise<Prayer> {
    const author = typeof input?.author === "string" ? input.author.trim() : "";
    const body = typeof input?.body === "string" ? input.body.trim() : "";
    if (!author || author.length > 80 || !body || body.length > 2000) {
      throw new BadRequestException("author (1-80 characters) and body (1-2000 characters) are required");
    }
    return this.prayers.save(this.prayers.create({ author, body }));
  }
}
