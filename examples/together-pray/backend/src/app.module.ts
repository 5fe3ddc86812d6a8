import { Module } from "@nestjs/common";
import { TypeOrmModule } from "@nestjs/typeorm";
import { AuthController } from "./auth/auth.controller";
import { dataSourceOptions } from "./data-source";
import { HealthController } from "./health.controller";
import { Prayer } from "./prayer.entity";
import { PrayersController } from "./prayers.controller";
import { User } from "./user.entity";

@Module({
  imports: [
    // Migrations run as their own deploy step, never at start-up.
    TypeOrmModule.forRootAsync({ useFactory: () => ({ ...dataSourceOptions(), migrationsRun: false }) }),
    TypeOrmModule.forFeature([Prayer, User]),
  ],
  controllers: [HealthController, PrayersController, AuthController],
})
export class AppModule {}
